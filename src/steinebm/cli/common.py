"""Checks every command's handler shares."""

from __future__ import annotations

from pathlib import Path

from steinebm.errors import UserError

__all__ = ["positive", "is_file"]


def positive(name: str, value: int) -> None:
    """A one-line error unless the count ``--name`` is at least 1."""
    if value < 1:
        raise UserError(f"--{name} must be >= 1, got {value}")


def is_file(path: str) -> bool:
    """Whether ``path`` names something on disk (False for a name no file system takes)."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL
        return False
