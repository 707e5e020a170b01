"""Checks before the first step: the run folder is a steinebm run (or new and empty), writable,
trained by no other process and large enough for the checkpoints; a fresh run that fails before
its first checkpoint leaves nothing behind."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steinebm.core.distributed import Ranks
from steinebm.engine.checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    PROBE_PREFIX,
    fsync_dir,
)
from steinebm.engine.config import Config
from steinebm.engine.config_file import from_dict
from steinebm.engine.settings import differing_keys
from steinebm.errors import UserError
from steinebm.learners.rules import Rule

__all__ = [
    "RunStart",
    "RESUMABLE_CHANGES",
    "CONFIG_HEADER",
    "check_run_folder",
    "check_writable",
    "hold_run_folder",
    "release_run_folder",
    "remove_start",
    "checkpoint_bytes",
    "check_free_space",
    "on_main",
    "config_diff",
    "resolve_device",
]

# A resumed run must match the saved one in everything but these.
RESUMABLE_CHANGES = {
    "epochs",
    "progress",
    "threads",
    "max_steps",
    "eval_every",
    "eval_samples",
    "log_every",
    "data_dir",
    "out_dir",
    "on_divergence",  # a diverged run may be resumed with rollback on
    "rollback_lr_factor",
    "max_rollbacks",
    "tensorboard",
    "diverge_growth",
    "flush_denormal",
    "data_fingerprint",  # recorded from the data itself; provenance.check_same_data compares it
}


@dataclass
class RunStart:
    """What a fresh start has done so far: the folders and files it created, and whether a
    checkpoint exists."""

    created: list[Path] = field(default_factory=list)
    wrote: list[Path] = field(default_factory=list)
    saved: bool = False
    held: int | None = None  # the run folder's lock (:func:`hold_run_folder`)


# what a steinebm start leaves in its run folder before the first checkpoint (a failed start
# removes these again; a kill can leave them): such a folder may be started afresh
_START_FILES = {"config.yaml", "metrics.jsonl", "tensorboard", "samples"}
# the first line of every config.yaml steinebm writes: tells its own file from a user's
CONFIG_HEADER = "# steinebm run config: `steinebm resume RUN_DIR` continues this run\n"


def _foreign_entries(out: Path) -> list[str]:
    """Entries of ``out`` that no steinebm start wrote: a user's files, which a new run must not
    overwrite or mix with."""
    foreign = []
    for entry in sorted(out.iterdir()):
        name = entry.name
        if name.endswith(".tmp") and (name.startswith(PROBE_PREFIX) or name.startswith(tuple(_START_FILES))):
            continue
        if name == "config.yaml":
            try:
                with open(entry, encoding="utf-8") as fh:
                    if fh.readline() == CONFIG_HEADER:
                        continue
            except (OSError, UnicodeDecodeError):
                pass
        elif name in _START_FILES:
            continue
        foreign.append(name)
    return foreign


def check_run_folder(out: Path, resume: bool) -> None:
    """A fresh run needs an absent or empty ``out`` (or one that a failed steinebm start left);
    a resume needs a checkpoint there. Nothing is created or touched."""
    has_run = (out / CHECKPOINT).exists() or (out / PREVIOUS).exists()
    if resume:
        if not has_run:
            raise UserError(
                f"nothing to resume in {out} (no {CHECKPOINT}): check the folder, or train without --resume"
            )
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"out_dir {out} is a file, not a folder: choose another out_dir")
    if has_run:
        raise UserError(
            f"{out} already holds a run: continue it with `steinebm resume {out}`, or choose another out_dir"
        )
    if out.is_dir():
        foreign = _foreign_entries(out)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise UserError(
                f"out_dir {out} is not empty and is not a steinebm run (it holds {shown}): choose a new or empty folder"
            )


def hold_run_folder(out: Path) -> int | None:
    """Lock the existing folder ``out`` for this process's training: an advisory ``flock`` on the
    folder itself, which the system releases when the process ends however it ends, so no stale
    lock is ever left. A second process that would train the same folder at the same time (it
    would overwrite the first's checkpoints and remove the files it is writing) gets a one-line
    error instead. Returns the descriptor to pass to :func:`release_run_folder`; None where the
    system or the file system offers no such lock."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise UserError(
                f"{out} is being trained by another process now: wait for it to end, or stop it first "
                "(one training per run folder at a time)"
            ) from None
        return None  # a file system without locks (some network ones): train unguarded, as before
    return fd


def release_run_folder(held: int | None) -> None:
    """Give up the lock :func:`hold_run_folder` took (None: nothing to release)."""
    if held is not None:
        os.close(held)


def check_writable(out: Path) -> list[Path]:
    """Create ``out`` and write, fsync and remove a probe file in it (under a name of its own,
    so no file already there is touched). Returns the folders it created, outermost first."""
    created = [p for p in (out, *out.parents) if not p.exists()][::-1]
    try:
        out.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(created[0].parent)
        fd, probe = tempfile.mkstemp(dir=out, prefix=PROBE_PREFIX, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"\0" * 65536)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.unlink(probe)
    except OSError as e:
        for folder in reversed(created):  # only what this call made, and only if empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise UserError(f"run folder {out} is not writable ({e.strerror or e}): choose another out_dir") from None
    return created


def remove_start(start: RunStart) -> None:
    """Undo a start that failed before its first checkpoint: the files it wrote, then the
    folders it created, where they are empty."""
    for path in start.wrote:
        try:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass
    for folder in reversed(start.created):
        try:
            folder.rmdir()
        except OSError:
            break


def checkpoint_bytes(parts: Rule) -> int:
    """A generous estimate of one checkpoint's size: every module's state, Adam's two moments
    per trained parameter, 1 KiB of archive headers per tensor and 64 KiB for the RNG state,
    the config and the rest."""
    tensors = [t for mod in parts.modules.values() for t in mod.state_dict().values()]
    size = sum(t.numel() * t.element_size() for t in tensors)
    n = len(tensors)
    for opt in parts.optimizers.values():
        params = [p for group in opt.param_groups for p in group["params"]]
        size += 2 * sum(p.numel() * p.element_size() for p in params)
        n += 3 * len(params)  # step, exp_avg, exp_avg_sq
    return size + 1024 * n + 64 * 1024


def check_free_space(out: Path, checkpoint_bytes: int) -> None:
    """Room for three checkpoints: the previous and the latest stay while the next is written
    and verified."""
    need = 3 * checkpoint_bytes
    try:
        free = shutil.disk_usage(out).free
    except OSError as e:
        raise UserError(f"cannot read the free space of {out} ({e.strerror or e}): choose another out_dir") from None
    if free < need:
        raise UserError(
            f"not enough free space for the run folder {out}: {free / 2**20:.1f} MiB free, {need / 2**20:.1f} MiB "
            "needed (three checkpoints exist while one is replaced): free some space or choose another out_dir"
        )


def on_main(ranks: Ranks, check: Callable[[], None]) -> None:
    """Run ``check`` on rank 0 and raise its UserError on every rank, so that no rank waits
    forever in a collective for one that has stopped. Also a barrier."""
    err: str | None = None
    if ranks.is_main:
        try:
            check()
        except UserError as e:
            err = str(e)
    first = ranks.gather_objects(err)[0]
    if first is not None:
        raise UserError(str(first))


def config_diff(saved: dict[str, Any], cfg: Config) -> list[str]:
    """Keys (other than RESUMABLE_CHANGES) in which a saved config differs from ``cfg``
    (:func:`~steinebm.engine.settings.differing_keys`: keys a saved config predates count as their
    defaults, and only keys the runs read count: a key the method ignores does not make another run)."""
    try:
        from_dict(saved)
    except UserError:
        return ["(unreadable saved config)"]
    return [k for k in differing_keys([saved, cfg.to_dict()]) if k not in RESUMABLE_CHANGES]


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` names, else a one-line error (an unknown name, or CUDA absent)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"device={name!r} is not a device torch knows: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA device is available: use device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device=mps was asked for but MPS is not available: use device=cpu")
    return device
