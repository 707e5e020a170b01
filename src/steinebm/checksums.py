"""Checksums, one way for the whole package: md5 for the published data files (the digests
their publishers print), sha256 for the files the project ships (classifier weights, the FID
network)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = ["hasher", "digest", "file_digest"]

ALGORITHMS = ("md5", "sha256")


def hasher(algorithm: str) -> Any:
    """An incremental hash (``update`` blocks, then ``hexdigest``), for data read as it streams.

    >>> h = hasher("md5"); h.update(b"ab"); h.update(b"c"); h.hexdigest() == digest(b"abc", "md5")
    True
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    return hashlib.new(algorithm)


def digest(data: bytes, algorithm: str) -> str:
    """The hex digest of ``data``.

    >>> digest(b"", "md5")
    'd41d8cd98f00b204e9800998ecf8427e'
    """
    h = hasher(algorithm)
    h.update(data)
    return str(h.hexdigest())


def file_digest(path: str | Path, algorithm: str) -> str:
    """The hex digest of a file, read in blocks of 1 MiB (an OSError is the caller's to word)."""
    h = hasher(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return str(h.hexdigest())
