"""What every dataset is: the train/validation/test splits of float pixels in [0, 1] with their
image shape, where the data lives, and the fingerprint that names the data a run was trained on."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from steinebm.checksums import hasher
from steinebm.errors import DataError

__all__ = ["Split", "Dataset", "DATASETS", "SPLIT_SEED", "HOLDOUT_FRACTION", "Transform", "data_root", "fingerprint"]

DATASETS = ("mnist", "mnist-embedded", "fashion-mnist", "idx", "cifar10", "celeba", "lsun", "image-folder")
SPLIT_SEED = 42  # the authors' seed for the train/validation split


@dataclass
class Split:
    x: Tensor  # n d, float32 in [0, 1]
    y: Tensor  # n, int64

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    image_shape: tuple[int, ...]
    source: str  # where the files were read from
    classes: tuple[str, ...] = ()  # class names, where the data has them (label i is classes[i])

    @property
    def dim(self) -> int:
        return self.train.x.shape[1]


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``data_dir`` when given, else ``$STEINEBM_DATA``, else ``~/.cache/steinebm``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("STEINEBM_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "steinebm"


REFETCH = "delete it and fetch it again"


def _split_train_val(x: Tensor, y: Tensor, n_val: int, seed: int = SPLIT_SEED) -> tuple[Split, Split]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    tr, va = perm[: x.shape[0] - n_val], perm[x.shape[0] - n_val :]
    return Split(x[tr], y[tr]), Split(x[va], y[va])


def fingerprint(data: Dataset) -> str:
    """The sha256 (64 hex digits) of a dataset as loaded: its image shape, then every split's
    pixels (float32) and labels (int64) in order, train, validation, test. The same files read
    the same way give the same fingerprint whatever the dataset's name or folder; any changed
    pixel, label, split or preprocessing gives another. It costs one pass over the tensors:
    0.4 s for all of MNIST on one core of a shared 2-core CPU, where loading it takes 1.2-1.6 s."""
    h = hasher("sha256")
    parts = [(s.x, s.y) for s in (data.train, data.val, data.test)]
    header: dict[str, Any] = {"image_shape": [int(d) for d in data.image_shape]}
    header["splits"] = [[list(x.shape), str(x.dtype), list(y.shape), str(y.dtype)] for x, y in parts]
    h.update(json.dumps(header, sort_keys=True).encode())
    for x, y in parts:
        for t in (x, y):
            a = np.ascontiguousarray(t.detach().cpu().numpy())
            h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).data)
    return h.hexdigest()


def _shown(path: Path | str) -> str:
    """A path as an error message shows it: as is, or quoted with escapes where it holds a newline
    or another control character (file names in a data folder may), so the message stays one line."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _to_unit(a: np.ndarray | Tensor) -> Tensor:
    """uint8 pixels -> float32 pixels / 255 in [0, 1], written once into a new tensor (no float64 copy)."""
    arr = a.numpy() if isinstance(a, Tensor) else a
    out = torch.empty(arr.shape, dtype=torch.float32)
    np.divide(arr, np.float32(255.0), out=out.numpy())
    return out


Transform = Callable[[Image.Image, str], Image.Image]


HOLDOUT_FRACTION = 0.05  # validation and test each take 5% of an image dataset


MEMORY_FRACTION = 0.8  # refuse a dataset whose float tensors would need more of the machine's memory


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(n: int, dim: int, what: str) -> None:
    need, total = 4 * n * dim, _physical_memory()
    if total is not None and need > MEMORY_FRACTION * total:
        fit = max(1, int(0.5 * total / (4 * dim)))
        raise DataError(
            f"{what}: {n:,} images as float32 need {need / 2**30:.1f} GiB, more than {MEMORY_FRACTION:.0%} of "
            f"this machine's {total / 2**30:.1f} GiB: pass max_images (e.g. {fit:,})"
        )


def _holdout_size(n: int, what: str) -> int:
    if n < 3:
        raise DataError(f"{what} has {n} image(s): at least 3 are needed for train / validation / test splits")
    return max(1, round(HOLDOUT_FRACTION * n))
