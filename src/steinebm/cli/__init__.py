"""The ``steinebm`` command: train | resume | evaluate | sample | reproduce | report | demo.

Errors a user can fix are printed on one line (``steinebm: error: ...``) with exit status 2;
a diverged run prints where its last good checkpoint is and exits with status 3.
"""

from __future__ import annotations

import sys

from steinebm.cli import reproduce, runs
from steinebm.cli.parser import build_parser
from steinebm.errors import DivergenceError, UserError

__all__ = ["main"]


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
    try:
        return handler(args)
    except UserError as e:
        print(f"steinebm: error: {e}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"steinebm: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("steinebm: interrupted; the last checkpoint is kept (continue: steinebm resume RUN_DIR)", file=sys.stderr)
        return 130
