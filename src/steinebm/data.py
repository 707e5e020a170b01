"""Datasets: MNIST from the original IDX files (checksummed), and the embedded MNIST subset.

Where the data lives, in order: the folder the caller names (``--data-dir``), the
``STEINEBM_DATA`` environment variable, then ``~/.cache/steinebm``. MNIST files may sit in that
folder itself or in its ``mnist/`` sub-folder.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

__all__ = ["Split", "Dataset", "load_dataset", "load_mnist", "read_idx", "data_root", "DATASETS"]

MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# The embedded subset: the first 6,000 training and first 1,000 test images of the files above
# (written by scripts/make_mnist_subset.py).
SUBSET_FILES = {
    "train-images-idx3-ubyte.gz": "1ac03de7ecb10d80269b8abd182afbd4",
    "train-labels-idx1-ubyte.gz": "59fdc8a419aa8ad3df0ff5c74064416a",
    "t10k-images-idx3-ubyte.gz": "c3379f275b566375ab4528689c1795c4",
    "t10k-labels-idx1-ubyte.gz": "1d88dbe1fbee9022616057ede4463181",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
DATASETS = ("mnist", "mnist-embedded")
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

    @property
    def dim(self) -> int:
        return self.train.x.shape[1]


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("STEINEBM_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "steinebm"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_idx(path: Path, expect_ndim: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes; any malformation raises :class:`DataError`."""
    try:
        raw = gzip.decompress(Path(path).read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}); delete it and fetch it again") from None
    if len(raw) < 4:
        raise DataError(f"{path} is truncated (no IDX header); delete it and fetch it again")
    zero, dtype_code, ndim = raw[0] | raw[1] << 8, raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or ndim != expect_ndim:
        raise DataError(
            f"{path} has a wrong IDX magic ({raw[:4].hex()}, expected 000008{expect_ndim:02x}); "
            "delete it and fetch it again"
        )
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated (incomplete IDX header); delete it and fetch it again")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    n = int(np.prod(dims, dtype=np.int64))
    body = raw[4 + 4 * ndim :]
    if len(body) != n:
        raise DataError(
            f"{path} holds {len(body)} data bytes but its header says {n} ({dims}); delete it and fetch it again"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _download(names: dict[str, str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, md5 in names.items():
        if (folder / name).exists():
            continue
        last: Exception | None = None
        for mirror in MNIST_MIRRORS:
            try:
                with urllib.request.urlopen(mirror + name, timeout=30) as resp:
                    data = resp.read()
            except Exception as e:  # no network, 404, ...
                last = e
                continue
            if hashlib.md5(data).hexdigest() != md5:
                last = DataError(f"download of {name} from {mirror} failed its md5 check")
                continue
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, folder / name)
            break
        else:
            raise DataError(
                f"MNIST file {name} is missing from {folder} and could not be downloaded ({last}). "
                f"Put the four original MNIST files ({', '.join(MNIST_FILES)}) in {folder}, "
                "or point --data-dir / STEINEBM_DATA at the folder that holds them"
            )


def _find_mnist_folder(root: Path) -> Path | None:
    for cand in (root, root / "mnist"):
        if all((cand / n).exists() for n in MNIST_FILES):
            return cand
    return None


def _split_train_val(x: Tensor, y: Tensor, n_val: int, seed: int = SPLIT_SEED) -> tuple[Split, Split]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    tr, va = perm[: x.shape[0] - n_val], perm[x.shape[0] - n_val :]
    return Split(x[tr], y[tr]), Split(x[va], y[va])


def _read_mnist_folder(folder: Path, checksums: dict[str, str], n_val: int, name: str) -> Dataset:
    for fname, md5 in checksums.items():
        got = _md5(folder / fname)
        if got != md5:
            raise DataError(
                f"{folder / fname} has md5 {got}, expected {md5}: the file is corrupt or not the "
                "original; delete it and fetch it again"
            )
    xtr = read_idx(folder / "train-images-idx3-ubyte.gz", 3)
    ytr = read_idx(folder / "train-labels-idx1-ubyte.gz", 1)
    xte = read_idx(folder / "t10k-images-idx3-ubyte.gz", 3)
    yte = read_idx(folder / "t10k-labels-idx1-ubyte.gz", 1)
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise DataError(f"MNIST files in {folder} disagree on the number of images and labels")

    def to_x(a: np.ndarray) -> Tensor:  # pixels / 255 in [0, 1], as the authors' RBM code
        return torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)

    def to_y(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a.astype(np.int64))

    train, val = _split_train_val(to_x(xtr), to_y(ytr), n_val)
    return Dataset(name, train, val, Split(to_x(xte), to_y(yte)), (1, 28, 28), str(folder))


def load_mnist(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Dataset:
    """Full MNIST: 50,000 train / 10,000 validation (seeded split of the 60,000) / 10,000 test.

    Files are md5-checked on every load. Missing files are downloaded into the data root when
    ``download`` is set and a network exists (``STEINEBM_OFFLINE=1`` forbids it); otherwise a
    :class:`DataError` says where to put which files.
    """
    root = data_root(data_dir)
    folder = _find_mnist_folder(root)
    if folder is None:
        if not download or os.environ.get("STEINEBM_OFFLINE"):
            raise DataError(
                f"MNIST not found in {root}: put {', '.join(MNIST_FILES)} there "
                "(or in its mnist/ sub-folder), or point --data-dir / STEINEBM_DATA at them"
            )
        folder = root / "mnist" if not any((root / n).exists() for n in MNIST_FILES) else root
        _download(MNIST_FILES, folder)
    return _read_mnist_folder(folder, MNIST_FILES, n_val=10_000, name="mnist")


def load_mnist_embedded() -> Dataset:
    """The MNIST subset shipped in the package: 5,000 train / 1,000 validation / 1,000 test."""
    folder = Path(str(resources.files("steinebm") / "assets" / "mnist-subset"))
    return _read_mnist_folder(folder, SUBSET_FILES, n_val=1_000, name="mnist-embedded")


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Dataset:
    if name == "mnist":
        return load_mnist(data_dir, download)
    if name == "mnist-embedded":
        return load_mnist_embedded()
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
