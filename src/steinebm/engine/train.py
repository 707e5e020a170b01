"""The training loop: data order, optimizer steps, evaluation, checkpoints, logs, resume.

The maths lives in the learners; this file only moves batches and state around.
A run folder holds ``config.yaml``, ``metrics.jsonl`` (one JSON object per line),
``checkpoint.pt`` (one dict: modules, optimizers with their learning rates, counters, RNG state
and config) and, with ``tensorboard=true``, ``tensorboard/`` (the same scalars as event files).
Files are replaced atomically (temp file, fsync, rename, fsync of the folder), so a kill at any
moment leaves the last complete checkpoint readable and a resumed run ends bit-identical (on the
CPU) to one never interrupted. Before the first step the folder is checked for writability and
for room for two checkpoints, so a full disk is reported at the start, not hours in.

A non-finite loss or parameter stops the run, naming the step it came at (``on_divergence=stop``)
or, with ``on_divergence=rollback``, reloads the last checkpoint, lowers every learning rate by
``rollback_lr_factor`` and goes on, at most ``max_rollbacks`` times a run.

The loop reads the device on the host only where it logs or saves: the finiteness checks
(:class:`~steinebm.learners.rules.DivergenceWatch`), the summed loss and the rules' statistics
stay on the device between log lines, so a GPU step is not stalled by a read. What a rule itself
decides on the host (SteinGAN's adaptive discount, SteinCD-GAN's coin, the alternating schedule)
it reads at its step.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from steinebm.core.distributed import Ranks, from_env
from steinebm.data import Dataset
from steinebm.engine.build import (
    N_CLASSES,
    build_generator,
    build_kernel,
    build_learner,
    build_model,
    build_parts,
    load,
    load_config_dataset,
    load_generator,
)
from steinebm.engine.checkpoint import (
    CHECKPOINT,
    VERSION,
    atomic_write,
    load_checkpoint,
    load_latest,
    remove_stale_temps,
    save_checkpoint,
)
from steinebm.engine.config import Config, unused_settings, used_dict
from steinebm.engine.preflight import (
    CONFIG_HEADER,
    RESUMABLE_CHANGES,
    RunStart,
    check_free_space,
    check_run_folder,
    check_writable,
    checkpoint_bytes,
    config_diff,
    on_main,
    remove_start,
    resolve_device,
)
from steinebm.engine.provenance import check_same_data, record_data
from steinebm.engine.runlog import RunLog, read_metrics, summary_writer_class
from steinebm.errors import DivergenceError, UserError
from steinebm.evaluation.ais import ais_log_partition
from steinebm.evaluation.likelihood import EXACT_MAX_HIDDEN, log_likelihood, mean_negative_energy
from steinebm.learners.rules import DivergenceWatch, lr_scaled
from steinebm.models.energies import GaussianBernoulliRBM
from steinebm.models.mnist_nets import (
    LabelSampler,
    MNISTConditionalGenerator,
    MNISTGenerator,
)
from steinebm.shapes import MNIST_SHAPE

__all__ = [
    "train",
    "build_model",
    "build_generator",
    "build_learner",
    "build_parts",
    "load_checkpoint",
    "load",
    "load_generator",
    "build_kernel",
    "load_config_dataset",
    "read_metrics",
    "config_diff",
    "check_run_folder",
    "RESUMABLE_CHANGES",
    "MNIST_SHAPE",
    "N_CLASSES",
    "CHECKPOINT",
]

# the metrics.jsonl key of each optimizer's learning rate in a rollback record
LR_KEYS = {"optimizer": "lr", "gen_optimizer": "gen_lr", "cd_optimizer": "cd_lr"}


def lr_decay(cfg: Config, epoch: int) -> float:
    """The learning-rate factor in ``epoch`` (counted from 0): 1, and from ``lr_decay_from`` on
    ``1 - (epoch - lr_decay_from) / (epochs - lr_decay_from)`` (the authors' MNIST code)."""
    start = cfg.lr_decay_from
    if start is None or epoch < start:
        return 1.0
    return 1.0 - (epoch - start) / (cfg.epochs - start)


def _norms(modules: dict[str, nn.Module]) -> dict[str, Tensor]:
    """The L2 norm of each module's parameters (0-d tensors on their device: no host read)."""
    out = {}
    for name, mod in modules.items():
        params = [p.detach() for p in mod.parameters()]
        if params:
            out[name] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p) for p in params]))
    return out


def _check_growth(modules: dict[str, nn.Module], init: dict[str, Tensor], growth: float) -> None:
    """A run whose parameters stay finite can still have exploded (lr far too high: a test
    log-likelihood of -1e16). It is taken as diverged when some part's parameter norm exceeds
    ``growth`` times its norm at initialisation (at least 1): the shipped configs' runs stay
    within a few times theirs, an exploded run passes it by many orders of magnitude."""
    if not growth:
        return
    now = _norms(modules)
    names = list(init)
    if not names:
        return
    ratios = torch.stack([now[k] / init[k].clamp(min=1.0) for k in names]).tolist()  # one host read
    r, worst = max(zip(ratios, names))
    if r > growth:
        raise DivergenceError(
            f"the {worst}'s parameter norm grew to {r:.3g} times its initial one (diverge_growth={growth:g})"
        )


def _all_finite(modules: dict[str, nn.Module]) -> Tensor:
    """Whether every parameter is finite, as a 0-d bool tensor on the device (no host read)."""
    flags = [torch.isfinite(p).all() for mod in modules.values() for p in mod.parameters()]
    return torch.stack(flags).all() if flags else torch.tensor(True)


def _numbers(stats: dict[str, Any]) -> dict[str, Any]:
    """A log line's numbers: the rule's 0-d tensors read from the device in one go."""
    keys = [k for k, v in stats.items() if isinstance(v, Tensor)]
    if not keys:
        return stats
    values = torch.stack([stats[k].detach().float().reshape(()).cpu() for k in keys]).tolist()
    return {**stats, **dict(zip(keys, values))}


def train(cfg: Config, resume: bool = False, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train one run; returns the last evaluation record. See the module docstring. Started by
    torchrun, the processes train the run together (:mod:`steinebm.core.distributed`). A fresh run
    that fails before its first checkpoint leaves nothing behind (no folder, no files)."""
    cfg.validate()
    owns_group = not torch.distributed.is_available() or not torch.distributed.is_initialized()
    ranks, device_name = from_env(cfg.device)
    start = RunStart()
    # Weights that decay towards zero (those of always-black pixels) become subnormal floats, on
    # which CPU arithmetic is many times slower (a 6x slower SteinCD step was seen); flushing them
    # to zero changes nothing a float32 model can resolve.
    torch.set_flush_denormal(cfg.flush_denormal)
    try:
        return _train(cfg, resume, dataset, ranks, device_name, start)
    except BaseException:
        if not resume and not start.saved and ranks.is_main:
            remove_start(start)
        raise
    finally:
        torch.set_flush_denormal(False)  # the process's default again
        if owns_group:
            ranks.close()


def _train(
    cfg: Config, resume: bool, dataset: Dataset | None, ranks: Ranks, device_name: str, start: RunStart
) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    ck_path = out / CHECKPOINT
    if ranks.active and cfg.batch_size % ranks.world:
        raise UserError(f"batch_size={cfg.batch_size} does not split over {ranks.world} processes: make it a multiple")

    def check_folder() -> None:
        check_run_folder(out, resume)
        start.created = check_writable(out)
        if cfg.tensorboard:
            summary_writer_class()

    # every rank has seen the folder as it was before rank 0 writes to it
    on_main(ranks, check_folder)
    if ranks.is_main:  # before the free-space check: they may be what fills the disk
        remove_stale_temps(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(device_name)

    data = dataset if dataset is not None else load_config_dataset(cfg)
    cfg = record_data(cfg, data)  # the data's name and fingerprint, kept in config.yaml and the checkpoint
    x_train = data.train.x[: cfg.n_train] if cfg.n_train else data.train.x
    y_train = data.train.y[: x_train.shape[0]].to(device)
    x_train = x_train.to(device)
    x_test, x_val = data.test.x.to(device), data.val.x.to(device)
    n, dim = x_train.shape
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"batch_size={cfg.batch_size} is larger than the {n} training images")

    if (cfg.model == "joint" or cfg.conditional) and data.train.y.numel() and int(data.train.y.max()) >= N_CLASSES:
        raise UserError(
            f"the joint and class-conditional networks have {N_CLASSES} classes, but {data.name}'s labels go up to "
            f"{int(data.train.y.max())}: use an unconditional model, or data with labels 0-{N_CLASSES - 1}"
        )
    parts = build_parts(cfg, dim, device, ranks, tuple(data.image_shape))
    on_main(ranks, lambda: check_free_space(out, checkpoint_bytes(parts)))
    unused = unused_settings(cfg)
    if unused and ranks.is_main:  # after the checks: a run that cannot start says one line only
        print(
            f"steinebm: method={cfg.method} does not read {', '.join(unused)}: ignored, and left out of config.yaml",
            file=sys.stderr,
        )
    G = parts.modules.get("generator")
    if cfg.eval_samples and not isinstance(G, (MNISTGenerator, MNISTConditionalGenerator)):
        raise UserError("eval_samples scores an MNIST generator's images: set eval_samples=0 here")
    if isinstance(G, LabelSampler) and not resume:
        # a conditional generator draws labels as often as the training set holds them
        G.set_class_counts(torch.bincount(data.train.y, minlength=G.n_classes).float())
    model = parts.modules["model"]

    def rank_seed(at_step: int) -> int:
        # rank 0 of a fresh run draws exactly what a one-process run draws
        return cfg.seed + 1 + 1_000_003 * ranks.rank + 7_919 * at_step

    rng = torch.Generator(device=device).manual_seed(rank_seed(0))  # the learners' random draws

    # the training loss summed since the last log line: saved too, so that a resumed run's next
    # line averages the same steps as an uninterrupted run's. It stays on the device (a tensor
    # after the first step) and is read once per log line.
    loss_sum: float | Tensor = 0.0
    loss_n = 0

    def restore(ck: dict[str, Any]) -> int:
        """Load modules, optimizers (learning rates included), this rank's random stream and loss
        window from a checkpoint; returns its step."""
        nonlocal loss_sum, loss_n
        for name, mod in parts.modules.items():
            mod.load_state_dict(ck[name])
        for name, opt in parts.optimizers.items():
            opt.load_state_dict(ck[name])
        at = int(ck["step"])
        saved = ck.get("rng_ranks") or [ck["rng"]]
        if ranks.rank < len(saved):
            rng.set_state(saved[ranks.rank])
        else:  # more processes than when it was saved: a fresh stream for this rank
            rng.manual_seed(rank_seed(at))
        windows = ck.get("loss_windows") or []
        loss_sum, loss_n = (
            (float(windows[ranks.rank][0]), int(windows[ranks.rank][1])) if ranks.rank < len(windows) else (0.0, 0)
        )
        return at

    # the divergence guard's yardstick: each part's parameter norm as built from the seed (the
    # same before every resume, so a resumed run judges growth as an uninterrupted one does)
    init_norms = _norms(parts.modules)
    step = 0
    rollbacks = 0  # of the whole run, resumes included: max_rollbacks bounds them all
    elapsed = 0.0  # seconds of training before this process, for the run's total time
    if resume:
        latest: list[dict[str, Any]] = []

        def fall_back() -> None:
            ck, note = load_latest(out)
            if note:
                print(f"steinebm: {note}", file=sys.stderr)
            latest.append(ck)

        on_main(ranks, fall_back)  # rank 0 repairs the folder before the others read it
        ck = latest[0] if latest else load_checkpoint(ck_path)
        check_same_data(ck["config"], str(cfg.data_fingerprint), f"cannot resume {out}")
        diff = config_diff(ck["config"], cfg)
        if diff:
            raise UserError(f"cannot resume {out}: the config differs in {', '.join(diff)}; use the saved config.yaml")
        step = restore(ck)
        rollbacks = int(ck.get("rollbacks", 0))
        elapsed = float(ck.get("elapsed", 0.0))
        del ck, latest
    if ranks.is_main and not resume:
        start.wrote += [out / "metrics.jsonl", out / "config.yaml"]
        start.wrote += [out / name for name in ("tensorboard", "samples") if not (out / name).exists()]
    log = RunLog(
        out / "metrics.jsonl",
        keep_until_step=step if resume else None,
        enabled=ranks.is_main,
        tensorboard=out / "tensorboard" if cfg.tensorboard else None,
    )
    if ranks.is_main:
        # only the keys this run reads (the checkpoint keeps them all)
        config_text = (CONFIG_HEADER + yaml.safe_dump(used_dict(cfg), sort_keys=False)).encode()
        atomic_write(out / "config.yaml", lambda fh: fh.write(config_text))

    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    saved_at = step if resume else -1  # the step of the newest checkpoint

    def save() -> None:
        # a collective: every rank calls save()
        nonlocal saved_at
        saved_at = step  # on every rank, so that all of them skip or take the same saves
        gathered: list[Any] = ranks.gather_objects((rng.get_state(), float(loss_sum), loss_n))
        if not ranks.is_main:
            return
        log.flush()  # the TensorBoard events are at least as far along as the checkpoint
        save_checkpoint(
            {
                "version": VERSION,
                **{name: mod.state_dict() for name, mod in parts.modules.items()},
                **{name: opt.state_dict() for name, opt in parts.optimizers.items()},
                "step": step,
                "rng": rng.get_state(),
                "rng_ranks": [g[0] for g in gathered],
                "loss_windows": [[g[1], g[2]] for g in gathered],
                "rollbacks": rollbacks,
                "config": cfg.to_dict(),
                "dim": dim,
                "image_shape": list(data.image_shape),
                "elapsed": time.time() - t0,
            },
            ck_path,
        )
        start.saved = True

    def evaluate(epoch: float) -> dict[str, Any]:
        rec: dict[str, Any] = {"step": step, "epoch": epoch}
        if not ranks.is_main:
            return rec
        if isinstance(model, GaussianBernoulliRBM) and model.n_hidden > EXACT_MAX_HIDDEN:
            # too many hidden units to enumerate: one AIS log Z (seeded by the step) for both splits
            # the chains are drawn on the model's device, so the generator must live there too
            ais_rng = torch.Generator(device=device).manual_seed(step)
            est = ais_log_partition(model, n_chains=100, n_betas=2_000, generator=ais_rng)
            rec["test_ll"] = mean_negative_energy(model, x_test) - est.log_z
            rec["val_ll"] = mean_negative_energy(model, x_val) - est.log_z
            rec["ll_stderr"], rec["ll_method"] = est.stderr, "ais"
        elif hasattr(model, "log_partition"):
            rec["test_ll"] = log_likelihood(model, x_test, "exact").value
            rec["val_ll"] = log_likelihood(model, x_val, "exact").value
        if cfg.eval_samples and G is not None:
            rec.update(_score_generator(G, cfg.eval_samples, out / "samples" / f"step-{step:07d}.png"))
        rec["time"] = time.time() - t0
        log.write(rec)
        if not cfg.progress:  # no bar: one line per evaluation shows the run is alive
            ll = f", test_ll {rec['test_ll']:.2f}" if "test_ll" in rec else ""
            print(
                f"{cfg.method} seed {cfg.seed}: epoch {epoch:.4g}/{cfg.epochs}, step {step}/{total_steps}{ll}, "
                f"{rec['time']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        return rec

    def logged_eval(at: int) -> dict[str, Any]:
        """The evaluation already logged at step ``at``, if any (after a resume or rollback)."""
        done = [r for r in read_metrics(out) if "epoch" in r and r["step"] == at]
        return done[-1] if done else {}

    def lrs() -> dict[str, float]:
        return {LR_KEYS.get(name, f"{name}_lr"): opt.param_groups[0]["lr"] for name, opt in parts.optimizers.items()}

    def roll_back(reason: str) -> int:
        """Back to the last checkpoint with every learning rate times rollback_lr_factor (the
        rates in force now, so a second rollback to the same checkpoint lowers them again)."""
        ranks.barrier()  # rank 0 has finished writing the checkpoint every rank reads
        now = {name: [g["lr"] for g in opt.param_groups] for name, opt in parts.optimizers.items()}
        at = restore(load_checkpoint(ck_path))
        for name, opt in parts.optimizers.items():
            for group, lr in zip(opt.param_groups, now[name]):
                group["lr"] = lr * cfg.rollback_lr_factor
        log.truncate(at)
        log.write({"step": at, "rollback": rollbacks, "diverged_at": failed_step, **lrs(), "reason": reason})
        watch.clear()  # the failed steps are undone
        return at

    # The finiteness checks of a step stay on the device; they are read where the loop next logs
    # or saves (one host read per logging interval), and name the step that failed.
    watch: DivergenceWatch = getattr(parts, "watch", None) or DivergenceWatch()
    t0 = time.time() - elapsed  # the run's clock, across resumes
    last_eval: dict[str, Any] = {}
    if resume:  # the evaluation already logged at the checkpoint's step, if any
        last_eval = logged_eval(step)
    if step == 0 and not resume:
        last_eval = evaluate(0.0)
        save()
    bar = _progress(total_steps, step, cfg.progress and ranks.is_main, desc=f"{cfg.method} seed {cfg.seed}")
    perm_epoch, perm = -1, torch.empty(0, dtype=torch.long)
    failed_step = step + 1
    try:
        while step < total_steps:
            epoch, b = divmod(step, steps_per_epoch)
            if epoch != perm_epoch:
                # The order of an epoch depends only on (seed, epoch): a resumed run sees the same batches.
                g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
                perm, perm_epoch = torch.randperm(n, generator=g).to(device), epoch
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x_pos, y_pos = ranks.local_slice(x_train[idx]), ranks.local_slice(y_train[idx])
            failed_step = step + 1
            watch.at_step(failed_step)
            if cfg.input_dropout > 0 or cfg.head_dropout > 0:
                # torch's own generator feeds the energy's dropout: seeded per step and rank, so a
                # resumed run draws the same masks
                torch.manual_seed(rank_seed(step) + 1)
            try:
                with ExitStack() as scaled:
                    decay = lr_decay(cfg, epoch)
                    for opt in parts.optimizers.values():
                        scaled.enter_context(lr_scaled(opt, decay))
                    loss, stats = parts.step(x_pos, rng, y_pos)
                watch.check(_all_finite(parts.modules), "non-finite parameters after the update")
                after = step + 1
                if (
                    after % cfg.log_every == 0
                    or after % steps_per_epoch == 0
                    or (cfg.checkpoint_every and after % cfg.checkpoint_every == 0)
                    or after == total_steps
                ):  # before anything is logged or saved: a finite blow-up is caught too
                    watch.raise_if_failed(ranks)
                    _check_growth(parts.modules, init_norms, cfg.diverge_growth)
            except DivergenceError as e:
                failed_step = getattr(e, "step", failed_step)  # a watched failure names its own step
                if cfg.on_divergence != "rollback" or rollbacks >= cfg.max_rollbacks:
                    raise
                rollbacks += 1
                step = roll_back(str(e))
                save()  # the lowered rates hold from now on, even if the run is killed before the next checkpoint
                last_eval = logged_eval(step)
                bar.n = step
                bar.refresh()
                continue
            step += 1
            loss_sum = loss_sum + loss.detach()
            loss_n += 1
            bar.update(1)
            if step % cfg.log_every == 0:
                mean_loss = float(loss_sum) / loss_n
                log.write({"step": step, "loss": ranks.mean(mean_loss), **_numbers(stats)})
                bar.set_postfix(loss=f"{mean_loss:.4g}")
                loss_sum, loss_n = 0.0, 0
            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch and cfg.eval_every and (step // steps_per_epoch) % cfg.eval_every == 0:
                last_eval = evaluate(step / steps_per_epoch)
                if "test_ll" in last_eval:
                    bar.set_postfix(test_ll=f"{last_eval['test_ll']:.2f}")
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or (
                not cfg.checkpoint_every and end_of_epoch
            ):
                save()
        if not last_eval or last_eval["step"] != step:
            last_eval = evaluate(step / steps_per_epoch)
        if saved_at != step:  # a second save of the same step would push out the previous checkpoint
            save()
    except DivergenceError as e:
        last = load_checkpoint(ck_path)["step"] if ck_path.exists() else None
        if cfg.on_divergence == "rollback":
            lr_now = ", ".join(f"{k}={v:.3g}" for k, v in lrs().items())
            tried = f" after {rollbacks} rollback{'s' * (rollbacks != 1)} ({lr_now})"
            hint = "start a new out_dir with a lower lr or sampler step size, or resume with a larger max_rollbacks"
        else:
            tried = ""
            hint = (
                f"resume it with `steinebm resume {out} on_divergence=rollback`, or start a new out_dir with a "
                "lower lr or sampler step size"
            )
        raise DivergenceError(
            f"training diverged at step {failed_step}{tried}: {e}; the last good checkpoint is {ck_path} "
            f"(step {last}); {hint}"
        ) from None
    finally:
        bar.close()
        log.close()
    return last_eval


def _score_generator(G: nn.Module, n: int, grid_png: Path) -> dict[str, float]:
    """``n`` images from seeded noise scored under both MNIST classifiers, and the first 100 as
    a 10 x 10 grid (scored as one split, and saved to ``grid_png``). The generator's mode is
    left as it was."""
    from steinebm.evaluation.sample_scores import generated_images, grid_scores, score_images
    from steinebm.grids import save_image_grid

    was = G.training
    G.eval()
    try:
        x = generated_images(G, n, seed=0, batch_size=min(n, 1000))
    finally:
        G.train(was)
    scores = score_images(x)
    if n >= 100:
        scores.update(grid_scores(x))
        grid_png.parent.mkdir(exist_ok=True)
        save_image_grid(x[:100], grid_png, MNIST_SHAPE, nrow=10)
    return scores


def _progress(total: int, initial: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    # on a terminal the bar redraws in place; in a log file, one line every 30 s is enough
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        desc=desc,
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=interval,
    )
