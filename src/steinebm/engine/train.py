"""The training loop: data order, optimizer steps, evaluation, checkpoints, logs, resume.

The maths lives in the learning rules (:mod:`steinebm.learners`); the parts come from
:func:`~steinebm.engine.build.build_parts`; this file only moves batches and state around, and
names no rule. A run folder holds ``config.yaml`` (the keys the run reads), ``metrics.jsonl`` (one
JSON object per line), ``checkpoint.pt`` (one dict: :mod:`steinebm.engine.state`) and, with
``tensorboard=true``, ``tensorboard/`` (the same scalars as event files). Files are replaced
atomically (:mod:`steinebm.engine.checkpoint`), so a kill at any moment leaves the last complete
checkpoint readable and a resumed run ends bit-identical (on the CPU) to one never interrupted.
Before the first step the folder is checked for writability and for room for the checkpoints
(:mod:`steinebm.engine.preflight`), so a full disk is reported at the start, not hours in.

A non-finite loss or parameter, or a finite blow-up (:mod:`steinebm.engine.guard`), stops the run
naming the step it came at (``on_divergence=stop``) or, with ``on_divergence=rollback``, reloads
the last checkpoint, lowers every learning rate by ``rollback_lr_factor`` and goes on, at most
``max_rollbacks`` times a run.

The loop reads the device on the host only where it logs or saves: the finiteness checks, the
summed loss and the rules' statistics stay on the device between log lines, so a GPU step is not
stalled by a read (SteinGAN's adaptive discount is decided on the device too). What a rule
decides on the host for its control flow (SteinCD-GAN's coin, the alternating schedule) it reads
at its step.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from steinebm.core.distributed import Ranks, from_env
from steinebm.data import Dataset
from steinebm.engine.build import build_parts, load_config_dataset
from steinebm.engine.checkpoint import (
    CHECKPOINT,
    atomic_write,
    checkpoint_step,
    load_checkpoint,
    load_latest,
    remove_stale_temps,
    save_checkpoint,
)
from steinebm.engine.config import Config
from steinebm.engine.evaluate import evaluate_run
from steinebm.engine.guard import DivergenceGuard
from steinebm.engine.preflight import (
    CONFIG_HEADER,
    RunStart,
    check_free_space,
    check_run_folder,
    check_writable,
    checkpoint_bytes,
    config_diff,
    hold_run_folder,
    on_main,
    release_run_folder,
    remove_start,
    resolve_device,
)
from steinebm.engine.provenance import check_same_data, record_data
from steinebm.engine.runlog import RunLog, progress_bar, read_metrics, summary_writer_class
from steinebm.engine.settings import unused_settings, used_dict
from steinebm.engine.state import LoopState, checkpoint_dict, rank_seed, restore
from steinebm.errors import DivergenceError, UserError
from steinebm.learners.rules import lr_scaled
from steinebm.precision import wide_dtype

__all__ = ["train", "lr_decay"]

# the metrics.jsonl key of each optimizer's learning rate in a rollback record
LR_KEYS = {"optimizer": "lr", "gen_optimizer": "gen_lr", "cd_optimizer": "cd_lr"}


def lr_decay(cfg: Config, epoch: int) -> float:
    """The learning-rate factor in ``epoch`` (counted from 0): 1, and from ``lr_decay_from`` on
    ``1 - (epoch - lr_decay_from) / (epochs - lr_decay_from)`` (the authors' MNIST code)."""
    start = cfg.lr_decay_from
    if start is None or epoch < start:
        return 1.0
    return 1.0 - (epoch - start) / (cfg.epochs - start)


def _numbers(stats: dict[str, Any]) -> dict[str, Any]:
    """A log line's numbers: the rule's 0-d tensors read from the device in one go."""
    keys = [k for k, v in stats.items() if isinstance(v, Tensor)]
    if not keys:
        return stats
    first = stats[keys[0]]
    # float64 keeps each value as it is (a float32 statistic exactly, a discount of 0.7 as 0.7);
    # MPS has no float64, and float32 is what its statistics are
    dtype = wide_dtype(first.device)
    values = torch.stack([stats[k].detach().reshape(()).to(first.device, dtype) for k in keys]).cpu().tolist()
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
        release_run_folder(start.held)
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

    # ---- the folder, the data and the parts (nothing is written before the checks pass) ----
    def check_folder() -> None:
        check_run_folder(out, resume)
        start.created = check_writable(out)
        start.held = hold_run_folder(out)  # before anything in it is removed or written
        if cfg.tensorboard:
            summary_writer_class()

    on_main(ranks, check_folder)  # every rank has seen the folder as it was before rank 0 writes to it
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
    parts = build_parts(cfg, dim, device, ranks, tuple(data.image_shape), data.train.y, data.name)
    on_main(ranks, lambda: check_free_space(out, checkpoint_bytes(parts)))
    unused = unused_settings(cfg)
    if unused and ranks.is_main:  # after the checks: a run that cannot start says one line only
        print(
            f"steinebm: method={cfg.method} does not read {', '.join(unused)}: ignored, and left out of config.yaml",
            file=sys.stderr,
        )
    G = parts.modules.get("generator")

    # ---- the state: fresh, or from the checkpoint ----
    rng = torch.Generator(device=device).manual_seed(rank_seed(cfg.seed, ranks.rank, 0))  # the rule's draws
    # the guard's yardstick is the parts as built from the seed, before any resume
    guard = DivergenceGuard(parts.modules, cfg.diverge_growth, getattr(parts, "watch", None))
    state = LoopState(started=time.time())
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
        restore(parts, ck, rng, ranks, state, cfg.seed)
        state.rollbacks = int(ck.get("rollbacks", 0))
        state.started = time.time() - float(ck.get("elapsed", 0.0))  # the run's clock, across resumes
        del ck, latest
    else:
        start.wrote += [out / "metrics.jsonl", out / "config.yaml"]
        start.wrote += [out / name for name in ("tensorboard", "samples") if not (out / name).exists()]
    log = RunLog(
        out / "metrics.jsonl",
        keep_until_step=state.step if resume else None,
        enabled=ranks.is_main,
        tensorboard=out / "tensorboard" if cfg.tensorboard else None,
    )
    if ranks.is_main:  # only the keys this run reads (the checkpoint keeps them all)
        config_text = (CONFIG_HEADER + yaml.safe_dump(used_dict(cfg), sort_keys=False)).encode()
        atomic_write(out / "config.yaml", lambda fh: fh.write(config_text))
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    saved_at = state.step if resume else -1  # the step of the newest checkpoint

    def save() -> None:  # a collective: every rank calls it, and takes or skips the same saves
        nonlocal saved_at
        saved_at = state.step
        ck = checkpoint_dict(parts, state, rng, ranks, cfg, dim, tuple(data.image_shape))
        if ck is not None:
            log.flush()  # the TensorBoard events are at least as far along as the checkpoint
            save_checkpoint(ck, ck_path)
            start.saved = True

    def evaluate() -> dict[str, Any]:
        epoch = state.step / steps_per_epoch
        rec: dict[str, Any] = {"step": state.step, "epoch": epoch}
        if not ranks.is_main:
            return rec
        grid = out / "samples" / f"step-{state.step:07d}.png"
        rec.update(evaluate_run(parts.modules["model"], x_test, x_val, state.step, G, cfg.eval_samples, grid))
        rec["time"] = state.elapsed()
        log.write(rec)
        if "test_ll" in rec:
            bar.set_postfix(test_ll=f"{rec['test_ll']:.2f}")
        if not cfg.progress:  # no bar: one line per evaluation shows the run is alive
            ll = f", test_ll {rec['test_ll']:.2f}" if "test_ll" in rec else ""
            print(
                f"{cfg.method} seed {cfg.seed}: epoch {epoch:.4g}/{cfg.epochs}, step {state.step}/{total_steps}{ll}, "
                f"{rec['time']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        return rec

    def logged_eval() -> dict[str, Any]:
        """The evaluation already logged at this step, if any (after a resume or rollback)."""
        done = [r for r in read_metrics(out) if "epoch" in r and r["step"] == state.step]
        return done[-1] if done else {}

    def lrs() -> dict[str, float]:
        return {LR_KEYS.get(name, f"{name}_lr"): opt.param_groups[0]["lr"] for name, opt in parts.optimizers.items()}

    def roll_back(reason: str, failed_step: int) -> None:
        """Back to the last checkpoint with every learning rate times rollback_lr_factor (the
        rates in force now, so a second rollback to the same checkpoint lowers them again)."""
        ranks.barrier()  # rank 0 has finished writing the checkpoint every rank reads
        now = {name: [g["lr"] for g in opt.param_groups] for name, opt in parts.optimizers.items()}
        restore(parts, load_checkpoint(ck_path), rng, ranks, state, cfg.seed)
        for name, opt in parts.optimizers.items():
            for group, lr in zip(opt.param_groups, now[name]):
                group["lr"] = lr * cfg.rollback_lr_factor
        log.truncate(state.step)
        log.write(
            {"step": state.step, "rollback": state.rollbacks, "diverged_at": failed_step, **lrs(), "reason": reason}
        )
        guard.clear()  # the failed steps are undone
        save()  # the lowered rates hold from now on, even if the run is killed before the next checkpoint

    # ---- the loop ----
    bar = progress_bar(total_steps, state.step, cfg.progress and ranks.is_main, desc=f"{cfg.method} seed {cfg.seed}")
    last_eval = logged_eval() if resume else {}
    if not resume:
        last_eval = evaluate()
        save()
    perm_epoch, perm = -1, torch.empty(0, dtype=torch.long)
    failed_step = state.step + 1
    try:
        while state.step < total_steps:
            epoch, b = divmod(state.step, steps_per_epoch)
            if epoch != perm_epoch:
                # The order of an epoch depends only on (seed, epoch): a resumed run sees the same batches.
                g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
                perm, perm_epoch = torch.randperm(n, generator=g).to(device), epoch
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x_pos, y_pos = ranks.local_slice(x_train[idx]), ranks.local_slice(y_train[idx])
            failed_step = state.step + 1
            guard.at_step(failed_step)
            if cfg.input_dropout > 0 or cfg.head_dropout > 0:
                # torch's own generator feeds the energy's dropout: seeded per step and rank, so a
                # resumed run draws the same masks
                torch.manual_seed(rank_seed(cfg.seed, ranks.rank, state.step) + 1)
            after = state.step + 1
            writes = (
                after % cfg.log_every == 0
                or after % steps_per_epoch == 0
                or (cfg.checkpoint_every > 0 and after % cfg.checkpoint_every == 0)
                or after == total_steps
            )
            try:
                with ExitStack() as scaled:
                    for opt in parts.optimizers.values():
                        scaled.enter_context(lr_scaled(opt, lr_decay(cfg, epoch)))
                    loss, stats = parts.step(x_pos, rng, y_pos)
                guard.after_update()
                if writes:  # before anything is logged or saved: a finite blow-up is caught too
                    guard.check(ranks)
            except DivergenceError as e:
                failed_step = getattr(e, "step", failed_step)  # a watched failure names its own step
                if cfg.on_divergence != "rollback" or state.rollbacks >= cfg.max_rollbacks:
                    raise
                state.rollbacks += 1
                roll_back(str(e), failed_step)
                last_eval = logged_eval()
                bar.n = state.step
                bar.refresh()
                continue
            state.step += 1
            state.add_loss(loss)
            bar.update(1)
            if state.step % cfg.log_every == 0:
                mean_loss = state.take_mean_loss()
                log.write({"step": state.step, "loss": ranks.mean(mean_loss), **_numbers(stats)})
                bar.set_postfix(loss=f"{mean_loss:.4g}")
            end_of_epoch = state.step % steps_per_epoch == 0
            if end_of_epoch and cfg.eval_every and (state.step // steps_per_epoch) % cfg.eval_every == 0:
                last_eval = evaluate()
            if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0) or (
                not cfg.checkpoint_every and end_of_epoch
            ):
                save()
        if not last_eval or last_eval["step"] != state.step:
            last_eval = evaluate()
        if saved_at != state.step:  # a second save of the same step would push out the previous checkpoint
            save()
    except DivergenceError as e:
        raise _diverged(e, cfg, out, failed_step, state.rollbacks, lrs()) from None
    finally:
        bar.close()
        log.close()
    return last_eval


def _diverged(
    e: DivergenceError, cfg: Config, out: Path, failed_step: int, rollbacks: int, lrs: dict[str, float]
) -> DivergenceError:
    """The run's one-line divergence error: where, why, the last good checkpoint and what to do."""
    ck_path = out / CHECKPOINT
    last = checkpoint_step(ck_path) if ck_path.exists() else None
    if cfg.on_divergence == "rollback":
        lr_now = ", ".join(f"{k}={v:.3g}" for k, v in lrs.items())
        tried = f" after {rollbacks} rollback{'s' * (rollbacks != 1)} ({lr_now})"
        hint = "start a new out_dir with a lower lr or sampler step size, or resume with a larger max_rollbacks"
    else:
        tried = ""
        hint = (
            f"resume it with `steinebm resume {out} on_divergence=rollback`, or start a new out_dir with a "
            "lower lr or sampler step size"
        )
    return DivergenceError(
        f"training diverged at step {failed_step}{tried}: {e}; the last good checkpoint is {ck_path} "
        f"(step {last}); {hint}"
    )
