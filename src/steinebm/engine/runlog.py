"""The run log: metrics.jsonl (one JSON object per line) and, with ``tensorboard=true``, the same
scalars as TensorBoard event files; :func:`read_metrics` is its one reader."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from steinebm.engine.checkpoint import atomic_write
from steinebm.errors import UserError

__all__ = ["RunLog", "summary_writer_class", "json_lines", "read_log", "read_metrics", "progress_bar"]


def summary_writer_class() -> Any:
    """torch's SummaryWriter, or a UserError before training when its packages are missing
    (torch.utils.tensorboard imports without them and fails only later)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise UserError(
            f"tensorboard=true needs the tensorboard package ({e}): pip install 'steinebm[tensorboard]', "
            "or set tensorboard=false"
        ) from None
    return SummaryWriter


class RunLog:
    """Appends JSON lines and, given a ``tensorboard`` folder, writes each numeric value (but the
    step) as a TensorBoard scalar at the record's step. On resume and on rollback the records
    after the checkpoint's step are dropped, in both, since they are about to be redone."""

    def __init__(
        self, path: Path, keep_until_step: int | None, enabled: bool = True, tensorboard: Path | None = None
    ) -> None:
        self.path = path
        self.fh: Any = None
        self.tb: Any = None
        self.tensorboard = tensorboard
        self.enabled = enabled
        if not enabled:  # a rank other than 0 writes nothing
            return
        if keep_until_step is None:
            path.unlink(missing_ok=True)
            self._open(0)
        else:
            self.truncate(keep_until_step)

    def _open(self, purge_from: int) -> None:
        self.fh = open(self.path, "a")
        if self.tensorboard is not None:
            # TensorBoard hides the events of earlier writers at steps >= purge_step
            self.tb = summary_writer_class()(str(self.tensorboard), purge_step=purge_from, flush_secs=30)

    def truncate(self, step: int) -> None:
        """Keep the records up to ``step``: the metrics file is rewritten atomically, so a kill
        during the rewrite loses nothing."""
        if not self.enabled:
            return
        self.close()
        if self.path.exists():
            kept = "".join(ln + "\n" for ln, rec in json_lines(self.path) if rec["step"] <= step)
            atomic_write(self.path, lambda fh: fh.write(kept.encode()))
        self._open(step + 1)

    def write(self, record: dict[str, Any]) -> None:
        if self.fh is None:
            return
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, global_step=record["step"])

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def json_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The lines of a metrics log with their records. A partial *last* line is what a kill
    mid-write leaves and is dropped; anything else that is not a JSON object with a ``step``
    means the file is damaged, and what is drawn or resumed from it would silently hold less
    than the run logged, so it is a one-line error."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is damaged (not UTF-8 text): restore it or leave the run out") from None
    lines = text.splitlines()
    out = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if k == len(lines) - 1 and not text.endswith("\n"):
                break  # the unfinished line of a run killed while writing
            raise UserError(f"{path} is damaged at line {k + 1} ({e.msg}): restore it or leave the run out") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), (int, float)):
            raise UserError(f"{path} is damaged at line {k + 1} (not a record with a step): restore it or leave it out")
        out.append((line, rec))
    return out


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics log file, in order (see :func:`json_lines`)."""
    return [rec for _, rec in json_lines(path)]


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of RUN_DIR/metrics.jsonl, in order ([] before the first): the one reader of
    run logs (:func:`json_lines` says what it drops and what it refuses)."""
    p = Path(run_dir) / "metrics.jsonl"
    return read_log(p) if p.exists() else []


def progress_bar(total: int, initial: int, enabled: bool, desc: str) -> Any:
    """The loop's progress bar (tqdm on stderr)."""
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
