"""The ``steinebm`` command: train | resume | evaluate | sample | reproduce | report | demo.

Errors a user can fix are printed on one line (``steinebm: error: ...``) with exit status 2;
a diverged run prints where its last good checkpoint is and exits with status 3. Ctrl-C exits
with status 130, SIGTERM with 143, both after stopping any worker processes; the last checkpoint
is kept either way.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from steinebm.cli import reproduce, runs
from steinebm.cli.parser import build_parser
from steinebm.errors import DivergenceError, UserError

__all__ = ["main"]

# what a stopped command keeps, and how to go on: a reproduction (and the demo) resumes its runs
# when run again; a run, with `steinebm resume`; the other commands write no checkpoint
_GO_ON = {
    "train": "the last checkpoint is kept (continue: steinebm resume RUN_DIR)",
    "resume": "the last checkpoint is kept (continue: steinebm resume RUN_DIR)",
    "reproduce": "each run keeps its last checkpoint (continue: run the same command again)",
    "demo": "each run keeps its last checkpoint (continue: run the same command again)",
}


def main(argv: list[str] | None = None) -> int:
    """Run ``steinebm`` with ``argv`` (default: the process's arguments); returns the exit status."""
    parser = build_parser()
    # key=value overrides may come after options (`train c.yaml --resume lr=1e-3`)
    args, extra = parser.parse_known_args(argv)
    if extra:
        flags = [e for e in extra if e.startswith("-")]
        if args.command in ("train", "resume") and not flags:
            args.overrides = [*args.overrides, *extra]
        else:  # name only what is wrong, not the key=value overrides beside it
            wrong = flags or extra
            parser.error(f"unrecognized argument{'s' * (len(wrong) > 1)}: {' '.join(wrong)}")
    handler = {
        "train": runs.train,
        "resume": runs.resume,
        "evaluate": runs.evaluate,
        "sample": runs.sample,
        "reproduce": reproduce.reproduce,
        "report": reproduce.report,
        "demo": runs.demo,
    }[args.command]
    # SIGTERM (`timeout`, a batch scheduler) stops the command as Ctrl-C does, so that the
    # cleanup runs: a reproduction's worker processes are stopped rather than orphaned. Not
    # under torchrun: it sends SIGTERM to the other ranks when one fails, and a rank waiting in
    # a collective would run the handler only once the collective gives up; the default ends it
    # at once, and one run has no workers to stop.
    catch = threading.current_thread() is threading.main_thread() and int(os.environ.get("WORLD_SIZE", "1")) <= 1
    # (None: a handler set outside Python, which cannot be put back; the default is then)
    before = signal.signal(signal.SIGTERM, _terminated) if catch else None
    try:
        return handler(args)
    except _Terminated as e:
        print(_stopped("stopped (SIGTERM)", args.command, e), file=sys.stderr)
        return 143
    except UserError as e:
        print(f"steinebm: error: {e}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"steinebm: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as e:
        print(_stopped("interrupted", args.command, e), file=sys.stderr)
        return 130
    finally:
        if catch:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)


def _stopped(how: str, command: str, e: BaseException) -> str:
    """The line a stopped command prints: what it keeps and how to go on. A run names its folder,
    or says that it saved nothing yet (a run stopped before its first checkpoint leaves none)."""
    from steinebm.engine.checkpoint import CHECKPOINT

    run = getattr(e, runs._STOPPED_RUN, None)
    if run is not None:
        if not (Path(run) / CHECKPOINT).exists():
            return f"steinebm: {how}; the run saved no checkpoint yet (start it again)"
        return f"steinebm: {how}; the last checkpoint is kept (continue: steinebm resume {run})"
    return f"steinebm: {how}; {_GO_ON[command]}" if command in _GO_ON else f"steinebm: {how}"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C raises KeyboardInterrupt."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated
