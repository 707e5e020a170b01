"""Checkpoint files: atomic writes, a digest of the content that every reader checks, and the
previous checkpoint kept until its successor is written and verified.

A run folder holds ``checkpoint.pt`` (the latest) and, after the second save,
``checkpoint-previous.pt`` (the one before). Each is one ``torch.save`` dict whose ``digest`` is
the sha256 of everything else in it (:func:`content_digest`: tensors by dtype, shape and bytes,
other values by their ``repr``), so a flipped byte inside a tensor is caught on load, not
discovered as a log-likelihood of -1e74 or a resumed run that diverges. A save:

1. writes the new file beside the old one under a temp name, fsyncs it, reads it back and
   checks its digest (a write the disk garbled never replaces a good file);
2. hard-links (or, where links are not supported, copies) the current ``checkpoint.pt`` to
   ``checkpoint-previous.pt``, atomically;
3. renames the new file over ``checkpoint.pt`` and fsyncs the folder.

A kill at any moment leaves ``checkpoint.pt`` complete (old or new) and perhaps a temp file,
which the next run removes (:func:`remove_stale_temps`).

>>> import tempfile, torch
>>> folder = Path(tempfile.mkdtemp())
>>> save_checkpoint({"version": VERSION, "step": 3, "w": torch.ones(2)}, folder / CHECKPOINT)
>>> int(load_checkpoint(folder, kind="file")["step"])
3
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from steinebm.checksums import hasher
from steinebm.errors import UserError

__all__ = [
    "CHECKPOINT",
    "PREVIOUS",
    "DAMAGED",
    "PROBE_PREFIX",
    "VERSION",
    "content_digest",
    "fsync_dir",
    "atomic_write",
    "save_checkpoint",
    "load_checkpoint",
    "load_latest",
    "remove_stale_temps",
    "checkpoint_step",
    "checkpoint_header",
    "HEADER_KEYS",
]

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint-previous.pt"
DAMAGED = "checkpoint-damaged.pt"
# 1: no digest (refused: its content cannot be checked); 2: with ``digest``
VERSION = 2
# the temp-file prefixes of the writes a kill can cut short, and of the writability probe
PROBE_PREFIX = ".steinebm-probe-"


def content_digest(obj: Any) -> str:
    """sha256 over a canonical walk of ``obj``: dicts in the order of their keys' ``repr``,
    lists and tuples in order, tensors by dtype, shape and raw bytes, anything else by ``repr``.
    Equal content gives the same digest however it was pickled."""
    h = hasher("sha256")

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            h.update(f"D{len(x)}".encode())
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"{'L' if isinstance(x, list) else 'U'}{len(x)}".encode())
            for item in x:
                walk(item)
        else:
            h.update(f"V{type(x).__name__}:{x!r};".encode())

    walk(obj)
    return h.hexdigest()


@functools.cache
def _file_mode() -> int:
    """The mode a plain ``open`` would give a new file (mkstemp's 0600 would hide a run from the
    group that shares it)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable: without it a power cut can undo the
    rename and leave the folder pointing at no checkpoint, or at the old one."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, write: Callable[[IO[bytes]], object], before_replace: Callable[[Path], None] | None = None
) -> None:
    """Replace ``path`` whole or not at all: ``write`` fills a temp file beside it, which is
    fsynced, handed to ``before_replace`` (a check, or keeping the old file), renamed over
    ``path``, and the folder fsynced. A kill at any moment leaves the old file or the new one,
    never a mix (and perhaps a stale temp file, which the next run removes)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _keep_previous(path: Path) -> None:
    """``path`` also as ``checkpoint-previous.pt`` beside it, replaced atomically: a hard link
    (no copy of the bytes), or a copy where the file system has no links."""
    if not path.exists():
        return
    prev = path.with_name(PREVIOUS)
    if prev.exists() and os.path.samefile(path, prev):
        # already linked (a save killed between this step and its rename): a rename onto the
        # same file would do nothing and leave the temp name behind
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=PREVIOUS, suffix=".tmp")
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, prev)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(ck: dict[str, Any], path: Path, keep_previous: bool = True) -> None:
    """Write ``ck`` with its content digest to ``path`` (see the module docstring); the file
    that was there stays as ``checkpoint-previous.pt`` when ``keep_previous``."""
    body = {k: v for k, v in ck.items() if k != "digest"}
    digest = content_digest(body)

    def verify_then_keep(tmp: Path) -> None:
        back = _read(tmp)
        if isinstance(back, str) or back.get("digest") != digest or content_digest(_body(back)) != digest:
            raise OSError(f"the checkpoint written to {tmp} does not read back as written (disk fault?)")
        if keep_previous:
            _keep_previous(path)

    atomic_write(path, lambda fh: torch.save({**body, "digest": digest}, fh), verify_then_keep)


def _body(ck: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ck.items() if k != "digest"}


def _read(path: Path) -> dict[str, Any] | str:
    """torch.load with the safe loader and its warnings silenced; else why it could not be read:
    "unsafe" (the safe loader refused an object: a pickle that would run code, or not ours),
    "damaged" (a torch archive that does not load: truncated or overwritten), "foreign"."""
    data = path.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return "unsafe"
    except Exception:
        return "damaged" if data[:2] == b"PK" else "foreign"
    return ck if isinstance(ck, dict) else "foreign"


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def load_checkpoint(path: str | Path, kind: str = "run") -> dict[str, Any]:
    """The checkpoint dict at ``path`` (a file, or a run folder's ``checkpoint.pt``), read
    without executing any code and only if its content matches its digest; the ``digest`` key
    is left out. ``kind="run"`` also requires a training checkpoint (a model and a config).

    Every failure is one :class:`UserError` line that says what to do."""
    file = _resolve(path)
    if not file.exists():
        prev = file.with_name(PREVIOUS)
        if file.name == CHECKPOINT and prev.exists():
            raise UserError(
                f"no {CHECKPOINT} in {file.parent}, only {PREVIOUS}: resume the run (steinebm resume "
                f"{file.parent}), or read that file directly ({prev})"
            )
        raise UserError(f"no checkpoint at {file}: train a run there first (steinebm train CONFIG)")
    try:
        ck = _read(file)
    except OSError as e:
        raise UserError(f"cannot read checkpoint {file} ({e.strerror or e}): check its permissions") from None
    if ck == "damaged":
        raise UserError(f"checkpoint {file} is damaged (it does not read as a whole archive){_fallback_hint(file)}")
    if isinstance(ck, str):
        raise UserError(
            f"{file} is not a steinebm checkpoint and was not loaded (it holds objects other than tensors and plain "
            "values, or is no torch file at all): point to the checkpoint.pt of a run folder"
        )
    if "digest" not in ck:
        if ck.get("version") == 1:
            raise UserError(
                f"{file} was written by an older steinebm without a content digest, so its content cannot be "
                "checked: retrain the run"
            )
        raise UserError(f"{file} is not a steinebm checkpoint (it has no content digest) and was not loaded")
    body = _body(ck)
    if content_digest(body) != ck["digest"]:
        raise UserError(f"checkpoint {file} is damaged (its content does not match its digest){_fallback_hint(file)}")
    if kind == "run" and (body.get("version") != VERSION or "model" not in body or "config" not in body):
        raise UserError(f"{file} is not a steinebm training checkpoint (version {VERSION}); retrain or restore it")
    return body


def _fallback_hint(file: Path) -> str:
    prev = file.with_name(PREVIOUS)
    if file.name != CHECKPOINT or not prev.exists():
        return ": restore it from a copy or retrain"
    return f": resume the run (steinebm resume {file.parent}) to go back to {PREVIOUS}, or read that file ({prev})"


def load_latest(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The newest intact checkpoint of a run folder for a resume: ``checkpoint.pt``, else
    ``checkpoint-previous.pt``. On a fall-back the damaged (or missing) latest file is moved to
    ``checkpoint-damaged.pt`` and the previous one linked in its place, so the next save keeps a
    good previous checkpoint; the second value then says, in one line, what happened."""
    latest, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    try:
        return load_checkpoint(latest), None
    except UserError as e:
        if not prev.exists():
            raise
        first = str(e)
    ck = load_checkpoint(prev)  # raises its own one line when it is damaged too
    if latest.exists():
        os.replace(latest, run_dir / DAMAGED)
    atomic_write(latest, lambda fh: fh.write(prev.read_bytes()))
    why = "missing" if first.startswith("no ") else "damaged"
    kept = f" (kept as {DAMAGED})" if why == "damaged" else ""
    return ck, f"{latest} is {why}{kept}; resuming from {PREVIOUS} at step {int(ck['step'])}"


# the plain values of a training checkpoint, beside the modules' and optimizers' tensors
HEADER_KEYS = ("version", "digest", "step", "config", "rollbacks", "elapsed", "dim", "image_shape")


def checkpoint_header(path: str | Path) -> dict[str, Any]:
    """A training checkpoint's plain values (its step, config, counters and recorded digest:
    ``HEADER_KEYS``) without reading its tensors: torch maps the file and unpickles only its small
    index, so the tens of megabytes of a SteinGAN checkpoint's weights and Adam moments stay on
    disk. The digest, which covers the tensors too, is not checked here: this is for what decides whether
    a later full read is needed (a cache's step, a finished run's config), never for what is
    loaded into a model. A file that cannot be read so gets :func:`load_checkpoint`'s one line."""
    file = _resolve(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ck = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(ck, dict) or "digest" not in ck or "step" not in ck or "config" not in ck:
            raise ValueError(file)
        return {k: ck[k] for k in HEADER_KEYS if k in ck}
    except Exception:
        full = load_checkpoint(file)  # raises the reason; it checked that the content matches the digest
        return {**{k: v for k, v in full.items() if k in HEADER_KEYS}, "digest": content_digest(full)}


def checkpoint_step(path: str | Path) -> int:
    """The training step of a checkpoint (:func:`checkpoint_header`: no tensor is read)."""
    return int(checkpoint_header(path)["step"])


def remove_stale_temps(out: Path) -> None:
    """Temp files of writes that a kill interrupted, and writability probes a kill left: never
    read, but each may be as large as a checkpoint, so runs killed again and again would fill the
    disk with them. Only names steinebm itself makes are touched."""
    if not out.is_dir():
        return
    for tmp in out.glob("*.tmp"):
        name = tmp.name
        if name.startswith(PROBE_PREFIX) or any(
            name.startswith(base) for base in (CHECKPOINT, PREVIOUS, "config.yaml", "metrics.jsonl")
        ):
            tmp.unlink(missing_ok=True)
