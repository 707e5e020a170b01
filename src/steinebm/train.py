"""The training loop: data order, optimizer steps, evaluation, checkpoints, logs, resume.

The maths lives in the learners; this file only moves batches and state around.
A run folder holds ``config.yaml``, ``metrics.jsonl`` (one JSON object per line) and
``checkpoint.pt`` (one dict: model, optimizer, counters, RNG state and config), replaced
atomically, so a kill at any moment leaves the last complete checkpoint readable.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from .config import Config, from_dict
from .data import Dataset, load_dataset
from .energies import GaussianBernoulliRBM
from .errors import DivergenceError, UserError
from .kernels import IMQ, RBF, ConstantKernel, Kernel
from .learners import CD, HyvarinenScoreMatching, Learner, SteinCD, SteinScoreMatching, SymmetricSteinCD
from .metrics import average_log_likelihood

__all__ = ["train", "build_model", "build_learner", "load_checkpoint", "load", "CHECKPOINT"]

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1
# A resumed run must match the saved one in everything but these.
RESUMABLE_CHANGES = {"epochs", "progress", "threads", "max_steps", "eval_every", "log_every", "data_dir"}


def build_kernel(cfg: Config) -> Kernel:
    if cfg.kernel == "rbf":
        return RBF(cfg.bandwidth, cfg.median_over, cfg.log_term)  # type: ignore[arg-type]
    if cfg.kernel == "imq":
        return IMQ(bandwidth=cfg.bandwidth)
    return ConstantKernel()


def build_learner(cfg: Config) -> Learner:
    if cfg.method == "cd":
        return CD(cfg.cd_k, cfg.langevin_step, cfg.langevin_noise)
    if cfg.method == "steincd":
        return SteinCD(cfg.epsilon, build_kernel(cfg), cfg.normalize)  # type: ignore[arg-type]
    if cfg.method == "symmetric-steincd":
        return SymmetricSteinCD(cfg.epsilon, build_kernel(cfg), cfg.normalize)  # type: ignore[arg-type]
    if cfg.method == "stein-score-matching":
        return SteinScoreMatching(build_kernel(cfg), cfg.normalize)  # type: ignore[arg-type]
    return HyvarinenScoreMatching(cfg.sm_probes)


def build_model(cfg: Config, dim: int, generator: torch.Generator | None = None) -> nn.Module:
    return GaussianBernoulliRBM(dim, cfg.n_hidden, generator=generator)


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict without executing any code (``weights_only=True``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: train a run there first (steinebm train CONFIG)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"checkpoint {path} is unreadable or was tampered with ({msg[:200]}); restore it or retrain"
        ) from None
    if not isinstance(ck, dict) or ck.get("version") != CHECKPOINT_VERSION or "model" not in ck or "config" not in ck:
        raise UserError(f"{path} is not a steinebm checkpoint (version {CHECKPOINT_VERSION}); retrain or restore it")
    return ck


def load(run_dir: str | Path) -> nn.Module:
    """The trained energy model of a run folder, in eval mode on the CPU."""
    ck = load_checkpoint(run_dir)
    cfg = from_dict(ck["config"]).validate()
    model = build_model(cfg, int(ck["dim"]))
    try:
        model.load_state_dict(ck["model"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"checkpoint in {run_dir} does not match its config ({str(e).splitlines()[0]})") from None
    return model.eval()


class _Log:
    """Appends JSON lines; on resume, drops lines written after the checkpoint's step."""

    def __init__(self, path: Path, keep_until_step: int | None) -> None:
        self.path = path
        if keep_until_step is not None and path.exists():
            kept = [
                ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= keep_until_step
            ]
            path.write_text("".join(k + "\n" for k in kept))
        elif keep_until_step is None and path.exists():
            path.unlink()
        self.fh = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"\0" * 65536)
        probe.unlink()
    except OSError as e:
        raise UserError(f"run folder {out} is not writable ({e.strerror or e}): choose another out_dir") from None


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train(cfg: Config, resume: bool = False, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train one run; returns the last evaluation record. See the module docstring."""
    cfg.validate()
    out = Path(cfg.out_dir)
    ck_path = out / CHECKPOINT
    if ck_path.exists() and not resume:
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose another out_dir")
    _check_writable(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA device is available: use device=cpu")

    data = dataset if dataset is not None else load_dataset(cfg.dataset, cfg.data_dir)
    x_train = data.train.x[: cfg.n_train] if cfg.n_train else data.train.x
    x_train = x_train.to(device)
    n, dim = x_train.shape
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"batch_size={cfg.batch_size} is larger than the {n} training images")

    init_gen = torch.Generator().manual_seed(cfg.seed)
    model = build_model(cfg, dim, init_gen).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    learner = build_learner(cfg)
    rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # the learner's random draws
    step = 0
    if resume and ck_path.exists():
        ck = load_checkpoint(ck_path)
        saved = ck["config"]
        diff = [k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k) != v]
        if diff:
            raise UserError(f"cannot resume {out}: the config differs in {', '.join(diff)}; use the saved config.yaml")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        rng.set_state(ck["rng"])
        step = int(ck["step"])
    log = _Log(out / "metrics.jsonl", keep_until_step=step if (resume and ck_path.exists()) else None)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    def save() -> None:
        _atomic_save(
            {
                "version": CHECKPOINT_VERSION,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "rng": rng.get_state(),
                "config": cfg.to_dict(),
                "dim": dim,
                "image_shape": list(data.image_shape),
            },
            ck_path,
        )

    def evaluate(epoch: float) -> dict[str, Any]:
        model.eval()
        rec = {
            "step": step,
            "epoch": epoch,
            "test_ll": average_log_likelihood(model, data.test.x),
            "val_ll": average_log_likelihood(model, data.val.x),
            "time": time.time() - t0,
        }
        model.train()
        log.write(rec)
        return rec

    t0 = time.time()
    last_eval: dict[str, Any] = {}
    if step == 0:
        last_eval = evaluate(0.0)
        save()
    bar = _progress(total_steps, step, cfg.progress, desc=f"{cfg.method} seed {cfg.seed}")
    loss_sum, loss_n = 0.0, 0
    try:
        while step < total_steps:
            epoch, b = divmod(step, steps_per_epoch)
            # The order of an epoch depends only on (seed, epoch): a resumed run sees the same batches.
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(device)
            x_pos = x_train[idx]
            loss, stats = learner.loss(model, x_pos, rng)
            if not torch.isfinite(loss):
                raise DivergenceError(f"non-finite loss ({float(loss.detach())})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if not _all_finite(model):
                raise DivergenceError("non-finite parameters after the update")
            loss_sum += float(loss.detach())
            loss_n += 1
            bar.update(1)
            if step % cfg.log_every == 0:
                log.write({"step": step, "loss": loss_sum / loss_n, **stats})
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4g}")
                loss_sum, loss_n = 0.0, 0
            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch and cfg.eval_every and (step // steps_per_epoch) % cfg.eval_every == 0:
                last_eval = evaluate(step / steps_per_epoch)
                bar.set_postfix(test_ll=f"{last_eval['test_ll']:.2f}")
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or (
                not cfg.checkpoint_every and end_of_epoch
            ):
                save()
        if not last_eval or last_eval["step"] != step:
            last_eval = evaluate(step / steps_per_epoch)
        save()
    except DivergenceError as e:
        last = load_checkpoint(ck_path)["step"] if ck_path.exists() else None
        raise DivergenceError(
            f"training diverged at step {step + 1}: {e}; the last good checkpoint is {ck_path} (step {last}); "
            "lower lr or the sampler's step size and resume with --resume"
        ) from None
    finally:
        bar.close()
        log.close()
    return last_eval


def _progress(total: int, initial: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, disable=not enabled, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True
    )


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]


def finite(x: float) -> bool:
    return math.isfinite(x)
