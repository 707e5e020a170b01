"""The run log: metrics.jsonl (one JSON object per line) and, with ``tensorboard=true``, the same
scalars as TensorBoard event files; :func:`read_metrics` is its one reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoint import (
    atomic_write,
)
from .errors import UserError


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


# what a steinebm start leaves in its run folder before the first checkpoint (a failed start
# removes these again; a kill can leave them): such a folder may be started afresh


def json_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The complete JSON lines of a log (a kill mid-write can leave a partial last line)."""
    out = []
    for ln in path.read_text().splitlines():
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append((ln, rec))
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of RUN_DIR/metrics.jsonl, in order ([] before the first); a line that is not a
    complete JSON record (a kill mid-write leaves a partial last one) is left out."""
    p = Path(run_dir) / "metrics.jsonl"
    return [rec for _, rec in json_lines(p)] if p.exists() else []
