"""How labels become file, folder and anchor names."""

from __future__ import annotations

import re

__all__ = ["slug"]


def slug(label: str) -> str:
    """``label`` in lower case with every run of other characters than a-z and 0-9 made one
    hyphen, none at either end; ``"x"`` if nothing is left.

    >>> slug("SteinGAN without kernel"), slug("alpha=0.25"), slug("--")
    ('steingan-without-kernel', 'alpha-0-25', 'x')
    """
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "x"
