"""Datasets: MNIST and Fashion-MNIST from their original IDX files (checksummed), any folder of
IDX files, the embedded MNIST subset, and natural images: CIFAR-10 (the original Python pickle
batches, checksummed and read with a restricted unpickler), aligned CelebA, LSUN (an lmdb export
or an image folder) and any folder of images.

Where the data lives, in order: the folder the caller names (``--data-dir``), the
``STEINEBM_DATA`` environment variable, then ``~/.cache/steinebm``. MNIST files may sit in that
folder itself or in its ``mnist/`` sub-folder, Fashion-MNIST's in it or its ``fashion-mnist/``
sub-folder; the other datasets say in their loaders where they look.

Every dataset gives float32 pixels in [0, 1], one flattened row per image in CHW order (the
``image_shape`` of the :class:`Dataset`), and int64 labels. :func:`fingerprint` names the data
as loaded: a run records it, so that it is scored on the data it was trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from steinebm.errors import DataError

__all__ = [
    "Split",
    "Dataset",
    "load_dataset",
    "load_mnist",
    "load_fashion_mnist",
    "load_idx",
    "load_cifar10",
    "load_celeba",
    "load_lsun",
    "load_image_folder",
    "read_idx",
    "read_cifar_batch",
    "read_cifar_meta",
    "data_root",
    "fingerprint",
    "DATASETS",
]

MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# md5s of the same files' decompressed contents: the original data gzipped again passes too
MNIST_CONTENT = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
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
# Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): the md5s its authors publish for the four files.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# md5s of their decompressed contents. Debian's dataset-fashion-mnist package ships the same
# deflate streams under another gzip header (no file name, another time stamp), so its files
# have other md5s; restoring the header gives the published md5s back, and these contents.
FASHION_MNIST_CONTENT = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}
FASHION_MNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DATASETS = ("mnist", "mnist-embedded", "fashion-mnist", "idx", "cifar10", "celeba", "lsun", "image-folder")
SPLIT_SEED = 42  # the authors' seed for the train/validation split
MNIST_N_VAL = 10_000  # MNIST and Fashion-MNIST: validation images taken from the 60,000 training images


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


def _md5(path: Path) -> str:
    """The file's md5. A name that cannot be read (a folder in its place, no permission) is a
    DataError too: the loaders find files by name only, so that is user-fixable bad input."""
    h = hashlib.md5()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise DataError(
            f"cannot read {path} ({e.strerror or _one_line(e)}): replace it with the original file"
        ) from None
    return h.hexdigest()


REFETCH = "delete it and fetch it again"
_IDX_TYPES = {  # the IDX format's type codes
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "16-bit integer",
    0x0C: "32-bit integer",
    0x0D: "float32",
    0x0E: "float64",
}


def _gunzip(blob: bytes, path: Path, fix: str) -> bytes:
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: damaged deflate data (no OSError)
        raise DataError(f"{path} is not a readable gzip file ({_one_line(e)}); {fix}") from None


def _parse_idx(raw: bytes, path: Path, expect_ndim: int, fix: str) -> np.ndarray:
    """The array in an IDX file's bytes: unsigned bytes of ``expect_ndim`` dimensions, the body
    exactly as long as the header says; anything else raises :class:`DataError` ending in ``fix``."""
    if len(raw) < 4:
        raise DataError(f"{path} is truncated (no IDX header); {fix}")
    zero, dtype_code, ndim = raw[0] | raw[1] << 8, raw[2], raw[3]
    magic = f"IDX magic {raw[:4].hex()}, expected 000008{expect_ndim:02x}"
    if zero != 0 or dtype_code not in _IDX_TYPES:
        raise DataError(f"{path} has a wrong IDX magic ({raw[:4].hex()}, expected 000008{expect_ndim:02x}); {fix}")
    if dtype_code != 0x08:
        raise DataError(f"{path} holds {_IDX_TYPES[dtype_code]} values, not unsigned bytes ({magic}); {fix}")
    if ndim != expect_ndim:
        raise DataError(
            f"{path} holds a {ndim}-dimensional array, not a {expect_ndim}-dimensional one ({magic}); {fix}"
        )
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated (incomplete IDX header); {fix}")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    n = math.prod(dims)  # Python ints: dims near 2**32 overflow int64 and could wrap to the body's length
    body = raw[4 + 4 * ndim :]
    if len(body) != n:
        raise DataError(f"{path} holds {len(body)} data bytes but its header says {n} ({dims}); {fix}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def read_idx(path: str | os.PathLike[str], expect_ndim: int, fix: str = REFETCH) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``expect_ndim`` dimensions, gzipped (a name ending
    in ``.gz``) or not. Any malformation raises a one-line :class:`DataError` that ends with
    ``fix``, the advice for the file at hand."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {_shown(path)} ({e.strerror or _one_line(e)}); {fix}") from None
    raw = _gunzip(blob, path, fix) if path.name.lower().endswith(".gz") else blob
    return _parse_idx(raw, path, expect_ndim, fix)


@dataclass(frozen=True)
class _Known:
    """A dataset published as four IDX files of known checksums."""

    name: str  # its name in DATASETS
    title: str  # as messages name it
    files: Mapping[str, str]  # file name -> md5 of the file
    content: Mapping[str, str]  # file name -> md5 of its decompressed bytes (may be empty)


_MNIST = _Known("mnist", "MNIST", MNIST_FILES, MNIST_CONTENT)
_FASHION = _Known("fashion-mnist", "Fashion-MNIST", FASHION_MNIST_FILES, FASHION_MNIST_CONTENT)


def _identify(md5s: Iterable[str]) -> tuple[_Known, str] | None:
    """The known dataset and file name that one of ``md5s`` (a file's or its contents') belongs to."""
    for md5 in md5s:
        for known in (_MNIST, _FASHION):
            for table in (known.files, known.content):
                for fname, known_md5 in table.items():
                    if md5 == known_md5:
                        return known, fname
    return None


def _read_known(path: Path, ndim: int, known: _Known) -> np.ndarray:
    """One file of a checksummed IDX dataset, read once. The file's md5 must be the known one, or
    its decompressed bytes' (the original gzipped again). Where it is neither, the error says what
    the file is: another known dataset's file, a known file under another name, damaged, or a
    valid IDX file of other data."""
    fname = path.name
    md5 = known.files[fname]
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(
            f"cannot read {path} ({e.strerror or _one_line(e)}): replace it with the original file"
        ) from None
    got = hashlib.md5(blob).hexdigest()
    if got == md5:
        return _parse_idx(_gunzip(blob, path, REFETCH), path, ndim, REFETCH)
    arr: np.ndarray | None = None
    got_content = ""
    try:
        raw = _gunzip(blob, path, REFETCH)
        arr = _parse_idx(raw, path, ndim, REFETCH)
        got_content = hashlib.md5(raw).hexdigest()
    except DataError:
        pass
    if arr is not None and got_content == known.content.get(fname):
        return arr
    other, other_name = _identify((got, got_content)) or (None, "")
    if other is not None and other.name != known.name:
        raise DataError(
            f"{path} is {other.title}'s {other_name}, not {known.title}'s (md5 {got}): to train on it use "
            f"dataset={other.name} with the same --data-dir; for {known.title}, put its original files there"
        )
    if other is not None and other_name != fname:
        raise DataError(f"{path} is {other.title}'s {other_name} under another name (md5 {got}): rename it")
    if arr is None:
        kind = "images" if ndim == 3 else "labels"
        raise DataError(
            f"{path} has md5 {got}, expected {md5}, and is no readable IDX file of {kind}: the file is corrupt "
            f"or not the original; {REFETCH}"
        )
    shape = " x ".join(str(d) for d in arr.shape)
    raise DataError(
        f"{path} is a valid IDX file ({shape}) but not the original {known.title} file (md5 {got}, expected "
        f"{md5}): for other IDX data use dataset=idx (shapes are checked, no checksums); for {known.title}, "
        f"{REFETCH}"
    )


def _download(
    names: Mapping[str, str], folder: Path, mirrors: Sequence[str] | None = None, title: str = "MNIST"
) -> None:
    """Fetch each of ``names`` (file name -> md5) missing from ``folder`` from the first mirror
    that serves it with that md5. Only checked files are written; ``folder`` is created only
    when the first one is."""
    for name, md5 in names.items():
        if (folder / name).exists():
            continue
        last: Exception | None = None
        for mirror in mirrors if mirrors is not None else MNIST_MIRRORS:
            try:
                with urllib.request.urlopen(mirror + name, timeout=30) as resp:
                    data = resp.read()
            except Exception as e:  # no network, 404, ...
                last = e
                continue
            if hashlib.md5(data).hexdigest() != md5:
                last = DataError(f"download of {name} from {mirror} failed its md5 check")
                continue
            tmp = None
            try:  # only a complete, checked file ever appears under its name; no .part is left behind
                folder.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, folder / name)
            except OSError as e:
                raise DataError(
                    f"cannot write {folder / name} ({_one_line(e)}): free some space or choose another --data-dir"
                ) from None
            finally:
                if tmp is not None and os.path.exists(tmp):
                    os.unlink(tmp)
            break
        else:
            raise DataError(
                f"{title} file {name} is missing from {folder} and could not be downloaded ({last}). "
                f"Put the four original {title} files ({', '.join(names)}) in {folder}, "
                "or point --data-dir / STEINEBM_DATA at the folder that holds them"
            )


def _find_known_folder(root: Path, names: Iterable[str], sub: str) -> Path | None:
    for cand in (root, root / sub):
        if all((cand / n).exists() for n in names):
            return cand
    return None


def _split_train_val(x: Tensor, y: Tensor, n_val: int, seed: int = SPLIT_SEED) -> tuple[Split, Split]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    tr, va = perm[: x.shape[0] - n_val], perm[x.shape[0] - n_val :]
    return Split(x[tr], y[tr]), Split(x[va], y[va])


def _read_mnist_folder(
    folder: Path,
    checksums: Mapping[str, str],
    n_val: int,
    name: str,
    content: Mapping[str, str] | None = None,
    title: str = "MNIST",
    classes: tuple[str, ...] = (),
) -> Dataset:
    """Read MNIST's four files (or another dataset's under MNIST's names), each checked against
    ``checksums`` (or its decompressed bytes against ``content``), then what an md5 cannot vouch
    for when the checksums passed in are not those of the original files: 28 x 28 images, as
    many labels in 0..9, a test set, and more training images than ``n_val``."""
    known = _Known(name, title, checksums, content or {})
    xtr = _read_known(folder / "train-images-idx3-ubyte.gz", 3, known)
    ytr = _read_known(folder / "train-labels-idx1-ubyte.gz", 1, known)
    xte = _read_known(folder / "t10k-images-idx3-ubyte.gz", 3, known)
    yte = _read_known(folder / "t10k-labels-idx1-ubyte.gz", 1, known)
    fix = f"delete the {title} files and fetch the originals again"
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise DataError(f"{title} files in {folder} disagree on the number of images and labels; {fix}")
    for split, x, y in (("training", xtr, ytr), ("test", xte, yte)):
        if x.shape[1:] != (28, 28):
            raise DataError(f"the {title} {split} images in {folder} are {x.shape[1]}x{x.shape[2]}, not 28x28; {fix}")
        if y.size and int(y.max()) > 9:
            raise DataError(f"the {title} {split} labels in {folder} go up to {int(y.max())}, outside 0..9; {fix}")
    if xte.shape[0] == 0:
        raise DataError(f"the {title} test files in {folder} hold no images; {fix}")
    if not 0 < n_val < xtr.shape[0]:
        raise DataError(
            f"{title} in {folder} has {xtr.shape[0]} training images, too few for {n_val} validation; {fix}"
        )

    def to_x(a: np.ndarray) -> Tensor:  # pixels / 255 in [0, 1], as the authors' RBM code
        return torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)

    def to_y(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a.astype(np.int64))

    train, val = _split_train_val(to_x(xtr), to_y(ytr), n_val)
    return Dataset(name, train, val, Split(to_x(xte), to_y(yte)), (1, 28, 28), str(folder), classes)


def _load_known(
    known: _Known, data_dir: str | os.PathLike[str] | None, download: bool, mirrors: Sequence[str], sub: str, where: str
) -> Dataset:
    root = data_root(data_dir)
    folder = _find_known_folder(root, known.files, sub)
    if folder is None:
        if not download or os.environ.get("STEINEBM_OFFLINE"):
            raise DataError(
                f"{known.title} not found in {root}: put {', '.join(known.files)} there (or in its {sub}/ "
                f"sub-folder{where}), or point --data-dir / STEINEBM_DATA at them"
            )
        folder = root / sub if not any((root / n).exists() for n in known.files) else root
        _download(known.files, folder, mirrors, known.title)
    classes = FASHION_MNIST_CLASSES if known is _FASHION else ()
    return _read_mnist_folder(folder, known.files, MNIST_N_VAL, known.name, known.content, known.title, classes)


def load_mnist(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Dataset:
    """Full MNIST: 50,000 train / 10,000 validation (seeded split of the 60,000) / 10,000 test.

    Files are md5-checked on every load (a file gzipped again passes by its decompressed
    bytes' md5). Missing files are downloaded into the data root when ``download`` is set and a
    network exists (``STEINEBM_OFFLINE=1`` forbids it); otherwise a :class:`DataError` says
    where to put which files. A valid IDX file that is not MNIST's is refused with what it is:
    Fashion-MNIST's (use ``dataset=fashion-mnist``) or other data (use ``dataset=idx``).
    """
    return _load_known(_MNIST, data_dir, download, MNIST_MIRRORS, "mnist", "")


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 28 x 28 grey images of ten kinds of clothing
    (``classes``), read and split exactly as :func:`load_mnist`: 50,000 train / 10,000
    validation (seed 42) / 10,000 test.

    The four files (MNIST's names) sit in the data root or its ``fashion-mnist/`` sub-folder;
    Debian's ``dataset-fashion-mnist`` package installs them in
    ``/usr/share/datasets/fashion-mnist``. Each is checked against the published md5 or, for a
    copy gzipped again (Debian's), against its decompressed bytes' md5. Missing files are
    downloaded as for MNIST.
    """
    where = "; Debian's dataset-fashion-mnist package installs them in /usr/share/datasets/fashion-mnist"
    return _load_known(_FASHION, data_dir, download, FASHION_MNIST_MIRRORS, "fashion-mnist", where)


def load_mnist_embedded() -> Dataset:
    """The MNIST subset shipped in the package: 5,000 train / 1,000 validation / 1,000 test."""
    folder = Path(str(resources.files("steinebm") / "assets" / "mnist-subset"))
    return _read_mnist_folder(folder, SUBSET_FILES, n_val=1_000, name="mnist-embedded")


# --- any folder of IDX files ------------------------------------------------------------------------

IDX_VAL_FRACTION = 1 / 6  # with a test file: validation is this part of the training file (MNIST's 10,000 of 60,000)
_IDX_FIX = "dataset=idx reads unsigned-byte IDX files: images (count, height, width), labels (count)"


def _find_idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """The IDX files of a folder by (split, kind): a file counts when its name contains ``idx3``
    (images) or ``idx1`` (labels); ``train`` in the name makes it training data, ``test`` or
    ``t10k`` test data. Hidden files and sub-folders are skipped."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise DataError(f"cannot list {folder} ({e.strerror or _one_line(e)}): check the folder") from None
    found: dict[tuple[str, str], list[Path]] = {}
    for p in entries:
        low = p.name.lower()
        if p.name.startswith(".") or ("idx1" not in low and "idx3" not in low) or not p.is_file():
            continue
        if "idx1" in low and "idx3" in low:
            raise DataError(f"{_shown(p)}: the name says both idx1 (labels) and idx3 (images); rename it")
        train, test = "train" in low, "test" in low or "t10k" in low
        if train == test:
            raise DataError(
                f"{_shown(p)}: an IDX file's name must say either train or test / t10k, the split it holds; rename it"
            )
        key = ("train" if train else "test", "images" if "idx3" in low else "labels")
        found.setdefault(key, []).append(p)
    for (split, kind), paths in found.items():
        if len(paths) > 1:
            names = ", ".join(_shown(p.name) for p in paths)
            raise DataError(
                f"{folder} holds {len(paths)} {split} {kind} files ({names}): keep one, with each dataset's IDX "
                "files in a folder of its own"
            )
    return {k: v[0] for k, v in found.items()}


def load_idx(data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Any folder of IDX files (KMNIST, EMNIST, your own): unsigned-byte images of one size and,
    optionally, their labels; gzipped (``.gz``) or not. No checksums: shapes and sizes are checked.

    The folder is the data root itself (``--data-dir``). A file counts when its name contains
    ``idx3`` (images: count x height x width) or ``idx1`` (labels: count); ``train`` in its
    name makes it the training file, ``test`` or ``t10k`` the test file, so MNIST's own names
    (``train-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``, ...) work. Training images
    are required. Labels, when given, must be given for every split present and match its
    image count (any byte values); without them every label is 0.

    Splits, seeded with 42 as everywhere: with a test file, validation is the last
    ``round(n / 6)`` of a permutation of the n training images (MNIST's 10,000 of 60,000, so
    MNIST's files read as idx give exactly ``dataset=mnist``); without one, the permutation
    gives validation its last 5% and test the 5% before them, as for image folders.
    """
    folder = data_root(data_dir)
    if not folder.is_dir():
        raise DataError(
            f"IDX folder {folder} does not exist: point --data-dir at a folder of IDX files "
            "(e.g. train-images-idx3-ubyte.gz)"
        )
    files = _find_idx_files(folder)
    if ("train", "images") not in files:
        raise DataError(
            f"{folder} holds no IDX training images: dataset=idx needs a file whose name contains train and idx3 "
            "(e.g. train-images-idx3-ubyte.gz); test images (t10k or test, idx3) and labels (idx1) are optional"
        )
    has_test = ("test", "images") in files
    if ("test", "labels") in files and not has_test:
        raise DataError(f"{folder} holds IDX test labels but no test images (a t10k or test idx3 file): add them")
    with_labels = {split for split, kind in files if kind == "labels"}
    needed = {"train", "test"} if has_test else {"train"}
    if with_labels and with_labels != needed:
        missing = " and ".join(sorted(needed - with_labels))
        raise DataError(
            f"{folder} holds IDX labels for some splits but none for the {missing} images: add that labels file "
            "(idx1), or move the other labels files away to train without labels"
        )
    arrays = {key: read_idx(p, 3 if key[1] == "images" else 1, _IDX_FIX) for key, p in files.items()}
    xtr = arrays["train", "images"]
    n, h, w = xtr.shape
    what = f"IDX data in {_shown(folder)}"
    if n == 0 or h == 0 or w == 0:
        raise DataError(f"{files['train', 'images']} holds {n} images of {h}x{w} pixels: nothing to train on")
    xte = arrays.get(("test", "images"))
    if xte is not None and xte.shape[1:] != (h, w):
        raise DataError(
            f"the IDX test images in {folder} are {xte.shape[1]}x{xte.shape[2]}, the training images {h}x{w}: "
            "use files of one dataset"
        )
    if xte is not None and xte.shape[0] == 0:
        raise DataError(f"{files['test', 'images']} holds no images: remove it or replace it")
    for split in sorted(with_labels):
        imgs, labs = arrays[split, "images"], arrays[split, "labels"]
        if imgs.shape[0] != labs.shape[0]:
            raise DataError(
                f"{files[split, 'labels']} holds {labs.shape[0]} labels for the {imgs.shape[0]} images of "
                f"{files[split, 'images'].name}: use the labels file that belongs to them"
            )
    _check_memory(n + (0 if xte is None else xte.shape[0]), h * w, what)

    def labels(split: str, count: int) -> Tensor:
        y = arrays.get((split, "labels"))
        return torch.zeros(count, dtype=torch.int64) if y is None else torch.from_numpy(y.astype(np.int64))

    x, y = _to_unit(xtr.reshape(n, -1)), labels("train", n)
    if xte is not None:
        if n < 2:
            raise DataError(f"{files['train', 'images']} holds 1 image: at least 2 are needed (one for validation)")
        train, val = _split_train_val(x, y, max(1, round(n * IDX_VAL_FRACTION)))
        test = Split(_to_unit(xte.reshape(xte.shape[0], -1)), labels("test", xte.shape[0]))
    else:
        n_hold = _holdout_size(n, what)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
        tr, te, va = perm[: n - 2 * n_hold], perm[n - 2 * n_hold : n - n_hold], perm[n - n_hold :]
        train, val, test = Split(x[tr], y[tr]), Split(x[va], y[va]), Split(x[te], y[te])
    return Dataset("idx", train, val, test, (1, h, w), str(folder))


def fingerprint(data: Dataset) -> str:
    """The sha256 (64 hex digits) of a dataset as loaded: its image shape, then every split's
    pixels (float32) and labels (int64) in order, train, validation, test. The same files read
    the same way give the same fingerprint whatever the dataset's name or folder; any changed
    pixel, label, split or preprocessing gives another. It costs one pass over the tensors:
    0.4 s for all of MNIST on one core of a shared 2-core CPU, where loading it takes 1.2-1.6 s."""
    h = hashlib.sha256()
    parts = [(s.x, s.y) for s in (data.train, data.val, data.test)]
    header: dict[str, Any] = {"image_shape": [int(d) for d in data.image_shape]}
    header["splits"] = [[list(x.shape), str(x.dtype), list(y.shape), str(y.dtype)] for x, y in parts]
    h.update(json.dumps(header, sort_keys=True).encode())
    for x, y in parts:
        for t in (x, y):
            a = np.ascontiguousarray(t.detach().cpu().numpy())
            h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).data)
    return h.hexdigest()


def _check_md5(path: Path, md5: str) -> None:
    got = _md5(path)
    if got != md5:
        raise DataError(
            f"{path} has md5 {got}, expected {md5}: the file is corrupt or not the original; "
            "delete it and fetch it again"
        )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


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


# --- CIFAR-10 ---------------------------------------------------------------------------------

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {  # md5s of the original files in cifar-10-python.tar.gz
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_N_VAL = 5_000
CIFAR10_PIXELS = 3 * 32 * 32

_NP_RECONSTRUCT: Callable[..., Any] = cast(Any, np.empty(0).__reduce__())[0]  # numpy's _reconstruct


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("numpy's _reconstruct is allowed only for a plain ndarray")
    return _NP_RECONSTRUCT(subtype, shape, dtype)


def _latin1_encode(text: Any, encoding: Any = "latin1", errors: Any = "strict") -> bytes:
    # How Python 3 writes bytes into a protocol-2 pickle: _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is allowed only to turn latin-1 text into bytes")
    return text.encode("latin1")


# Every global a CIFAR-10 batch needs (checked with pickletools on the original files: numpy's
# array reconstruction; files that Python 3 writes with protocol 2 add _codecs.encode for bytes and
# name numpy 2's numpy._core). Nothing else can be loaded, so a tampered file cannot run code.
_CIFAR_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _CifarUnpickler(pickle._Unpickler):
    """An unpickler that resolves only the globals in ``_CIFAR_PICKLE_GLOBALS``.

    It is Python's pure-Python unpickler (as fast as the C one on these files): the C one keeps its
    memo in an array that a PUT opcode with a large index grows and zero-fills, so a file of a few
    bytes could take gigabytes of memory; this one keeps the memo in a dict.
    """

    def __init__(self, fh: Any, path: Path) -> None:
        super().__init__(fh, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str, /) -> Any:
        obj = _CIFAR_PICKLE_GLOBALS.get((module, name))
        if obj is None:
            raise DataError(
                f"{self._path} asks to load {module}.{name}, which a CIFAR-10 batch never needs: refused "
                "(the file is not an original batch); delete it and fetch it again"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._path} holds a persistent id, which a CIFAR-10 batch never has; delete it")


def _unpickle_cifar(path: Path) -> Any:
    try:  # read from memory: a length field in the file can then ask for no more bytes than it has
        return _CifarUnpickler(io.BytesIO(path.read_bytes()), path).load()
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"cannot read {path} ({_one_line(e)}); check the file and its permissions") from None
    except Exception as e:  # any malformation: UnpicklingError, EOFError, ValueError, TypeError, ...
        detail = type(e).__name__ + (f": {_one_line(e)}" if str(e).strip() else "")
        raise DataError(f"{path} is not a readable CIFAR-10 pickle ({detail}); delete it and fetch it again") from None


def _dict_get(d: dict[Any, Any], key: str) -> Any:
    return d[key.encode()] if key.encode() in d else d.get(key)


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file (``data_batch_i``, ``test_batch``): uint8 pixels (n, 3072) in
    CHW order and int64 labels (n,).

    The file is unpickled by a restricted unpickler that resolves only numpy's array
    reconstruction globals, so a tampered file raises :class:`DataError` instead of running code;
    the contents are then checked (a dict with a uint8 ``data`` array of 3,072 columns and as
    many labels in 0..9).
    """
    path = Path(path)
    obj = _unpickle_cifar(path)
    bad = f"{path} is not a CIFAR-10 batch"
    if not isinstance(obj, dict):
        raise DataError(f"{bad} (it holds a {type(obj).__name__}, not a dict); delete it and fetch it again")
    data, labels = _dict_get(obj, "data"), _dict_get(obj, "labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise DataError(f"{bad} (no 2-d uint8 'data' array); delete it and fetch it again")
    if data.shape[1] != CIFAR10_PIXELS:
        raise DataError(f"{bad} ('data' has {data.shape[1]} columns, expected {CIFAR10_PIXELS}); delete it")
    if data.nbytes > path.stat().st_size:  # the pixels must come from the file itself
        raise DataError(f"{bad} ('data' is larger than the file); delete it and fetch it again")
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        y = labels.astype(np.int64)
    elif isinstance(labels, list) and all(type(v) is int for v in labels):
        if not all(0 <= v <= 9 for v in labels):  # checked first: 2**70 does not fit int64
            raise DataError(f"{bad} (labels outside 0..9); delete it and fetch it again")
        y = np.array(labels, dtype=np.int64)
    else:
        raise DataError(f"{bad} (no list of integer 'labels'); delete it and fetch it again")
    if y.shape[0] != data.shape[0]:
        raise DataError(f"{bad} ({data.shape[0]} images but {y.shape[0]} labels); delete it and fetch it again")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{bad} (labels outside 0..9); delete it and fetch it again")
    return np.ascontiguousarray(data), y


def read_cifar_meta(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The ten class names from CIFAR-10's ``batches.meta`` (read with the restricted unpickler)."""
    path = Path(path)
    obj = _unpickle_cifar(path)
    names = _dict_get(obj, "label_names") if isinstance(obj, dict) else None
    if not (isinstance(names, list) and len(names) == 10 and all(isinstance(v, (bytes, str)) for v in names)):
        raise DataError(f"{path} is not CIFAR-10's batches.meta (no 10 label_names); delete it and fetch it again")
    return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in names)


def _find_cifar_folder(root: Path) -> Path | None:
    for cand in (root, root / "cifar10" / CIFAR10_FOLDER, root / CIFAR10_FOLDER, root / "cifar10"):
        if all((cand / n).is_file() for n in CIFAR10_FILES):
            return cand
    return None


def _read_cifar_folder(
    folder: Path, checksums: Mapping[str, str], n_val: int = CIFAR10_N_VAL, name: str = "cifar10"
) -> Dataset:
    """Check every file's md5, read the six batches, split the 50,000 training images seeded."""
    for fname, md5 in checksums.items():
        _check_md5(folder / fname, md5)
    parts = [read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    xtr = np.concatenate([p[0] for p in parts])  # uint8: the float tensor is built once, per split
    ytr = np.concatenate([p[1] for p in parts])
    del parts
    xte, yte = read_cifar_batch(folder / "test_batch")
    classes = read_cifar_meta(folder / "batches.meta")
    if xte.shape[0] == 0:
        raise DataError(f"CIFAR-10's test_batch in {folder} holds no images; delete it and fetch it again")
    if not 0 < n_val < xtr.shape[0]:
        raise DataError(f"CIFAR-10 in {folder} has {xtr.shape[0]} training images, too few for {n_val} validation")
    tr, va = _split_train_val(torch.from_numpy(xtr), torch.from_numpy(ytr), n_val)
    del xtr
    train, val = Split(_to_unit(tr.x), tr.y), Split(_to_unit(va.x), va.y)
    del tr, va
    test = Split(_to_unit(xte), torch.from_numpy(yte))
    return Dataset(name, train, val, test, (3, 32, 32), str(folder), classes)


def _fetch(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest`` through a temporary file; keep it only if its md5 matches."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    h = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None, leave=False) as bar:
                        for block in iter(lambda: resp.read(1 << 20), b""):
                            h.update(block)
                            fh.write(block)
                            bar.update(len(block))
            except Exception as e:  # no network, 404, timeout, ...
                raise DataError(
                    f"could not download {url} ({_one_line(e)}): download it yourself and extract it in {dest.parent}"
                ) from None
        if h.hexdigest() != md5:
            raise DataError(
                f"download of {url} failed its md5 check (got {h.hexdigest()}, expected {md5}); try again later"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _safe_extract(archive: Path, dest: Path, folder: str, checksums: Mapping[str, str] | None = None) -> Path:
    """Extract the members under ``folder/`` of a .tar.gz into ``dest``, refusing absolute paths,
    ``..`` and links or special files anywhere in the archive; returns ``dest / folder``.

    With ``checksums`` (file name -> md5), every named file must be in the archive with that md5
    before any is moved into ``dest``: a bad file that reached ``dest`` would fail every later
    load, and the loader never downloads over a folder that looks complete.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                p = PurePosixPath(m.name)
                if p.is_absolute() or m.name.startswith("\\") or ".." in p.parts or ".." in m.name.split("\\"):
                    raise DataError(f"{archive} holds an unsafe member {m.name!r} (absolute or '..'); delete it")
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive} holds a link or special file {m.name!r}: refused; delete it")
                if p.parts and p.parts[0] == folder:
                    members.append(m)
            with tempfile.TemporaryDirectory(dir=dest, prefix=".extract-") as tmp:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # Python without extraction filters: the members were checked above
                    tar.extractall(tmp, members=members)
                src = Path(tmp) / folder
                if not src.is_dir():
                    raise DataError(f"{archive} has no {folder}/ folder; delete it and fetch it again")
                for name, md5 in (checksums or {}).items():
                    got = _md5(src / name) if (src / name).is_file() else "missing"
                    if got != md5:
                        raise DataError(
                            f"{archive} holds {folder}/{name} with md5 {got}, expected {md5}: not the original "
                            "archive, nothing extracted; delete it and fetch it again"
                        )
                target = dest / folder
                target.mkdir(exist_ok=True)
                for f in src.iterdir():
                    if f.is_file():
                        os.replace(f, target / f.name)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot extract {archive} ({_one_line(e)}); delete it and fetch it again") from None
    return dest / folder


def _download_cifar10(folder: Path) -> Path:
    archive = folder / "cifar-10-python.tar.gz"
    _fetch(CIFAR10_URL, archive, CIFAR10_ARCHIVE_MD5)
    try:
        return _safe_extract(archive, folder, CIFAR10_FOLDER, CIFAR10_FILES)
    finally:
        archive.unlink(missing_ok=True)


def load_cifar10(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Dataset:
    """CIFAR-10: 45,000 train / 5,000 validation (seeded split of the 50,000) / 10,000 test.

    Reads the original ``cifar-10-batches-py`` folder (``data_batch_1``..``5``, ``test_batch``,
    ``batches.meta``), found as the data root itself, ``cifar10/cifar-10-batches-py``,
    ``cifar-10-batches-py`` or ``cifar10/`` under it. Every file is md5-checked on every load and
    unpickled by a restricted unpickler. Pixels are / 255 in float32, rows in CHW order
    (``image_shape`` (3, 32, 32)); ``classes`` holds the ten class names. When the files are
    missing and ``download`` is set (and ``STEINEBM_OFFLINE`` is not), ``cifar-10-python.tar.gz``
    is downloaded, md5-checked and safely extracted into ``cifar10/`` under the data root.
    """
    root = data_root(data_dir)
    folder = _find_cifar_folder(root)
    if folder is None:
        if not download or os.environ.get("STEINEBM_OFFLINE"):
            raise DataError(
                f"CIFAR-10 not found in {root}: put the folder {CIFAR10_FOLDER} ({', '.join(CIFAR10_FILES)}, "
                f"from {CIFAR10_URL}) in {root} or {root / 'cifar10'}, or point --data-dir / STEINEBM_DATA at it"
            )
        folder = _download_cifar10(root / "cifar10")
    return _read_cifar_folder(folder, CIFAR10_FILES, CIFAR10_N_VAL)


# --- image datasets: CelebA, LSUN, any image folder ----------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
HOLDOUT_FRACTION = 0.05  # validation and test each take 5% of an image dataset
CELEBA_FOLDER = "img_align_celeba"
CELEBA_CROP = 108  # the usual DCGAN centre crop of the aligned 178 x 218 faces
MEMORY_FRACTION = 0.8  # refuse a dataset whose float tensors would need more of the machine's memory

Transform = Callable[[Image.Image, str], Image.Image]
_BILINEAR: Any = getattr(Image, "Resampling", Image).BILINEAR  # PIL's resize antialiases when shrinking


def _check_image_args(image_size: int, max_images: int | None) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, not {image_size!r}")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise DataError(f"max_images must be a positive integer or None (all), not {max_images!r}")


def _list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (hidden files and folders skipped), sorted by relative path."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = [
        p
        for p in found
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _decode(source: Path | bytes, what: str) -> Image.Image:
    """Open an image file or encoded bytes as RGB; anything unreadable raises DataError naming it."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return im.convert("RGB")
    except Exception as e:  # UnidentifiedImageError, truncated data, decompression bomb, ...
        raise DataError(
            f"cannot read image {what} ({type(e).__name__}: {_one_line(e)}): delete or replace it"
        ) from None


def _centre_crop(im: Image.Image, w: int, h: int) -> Image.Image:
    W, H = im.size
    left, top = (W - w) // 2, (H - h) // 2
    return im.crop((left, top, left + w, top + h))


def _resize_short_side_crop(size: int) -> Transform:
    """Resize (PIL bilinear, antialiased) so the shorter side is ``size``, then centre crop."""

    def f(im: Image.Image, what: str) -> Image.Image:
        W, H = im.size
        if min(W, H) != size:
            s = size / min(W, H)
            new = (size, max(size, round(H * s))) if W <= H else (max(size, round(W * s)), size)
            im = im.resize(new, _BILINEAR)
        return _centre_crop(im, size, size)

    return f


def _celeba_transform(size: int) -> Transform:
    """Centre crop 108 x 108, then resize (PIL bilinear, antialiased) to ``size`` x ``size``."""

    def f(im: Image.Image, what: str) -> Image.Image:
        W, H = im.size
        if W < CELEBA_CROP or H < CELEBA_CROP:
            raise DataError(
                f"{what} is {W}x{H}, smaller than the {CELEBA_CROP}x{CELEBA_CROP} CelebA crop: "
                "use the aligned images (img_align_celeba, 178x218)"
            )
        im = _centre_crop(im, CELEBA_CROP, CELEBA_CROP)
        return im if size == CELEBA_CROP else im.resize((size, size), _BILINEAR)

    return f


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


def _split_slots(n: int, n_hold: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seeded three-way split of n items: a permutation, then train = perm[: n - 2h],
    test = perm[n - 2h : n - h], validation = perm[n - h :] (the last ``h``).

    Returns the permutation and, per source item, its split (0 train, 1 validation, 2 test) and
    row, so that images can be written straight into their split as they are decoded.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    n_tr = n - 2 * n_hold
    split, row = np.empty(n, np.int64), np.empty(n, np.int64)
    for k, idx in ((0, perm[:n_tr]), (2, perm[n_tr : n_tr + n_hold]), (1, perm[n_tr + n_hold :])):
        split[idx], row[idx] = k, np.arange(idx.shape[0])
    return perm, split, row


def _collect(
    arrays: Iterable[np.ndarray], n: int, labels: np.ndarray, side: int, what: str
) -> tuple[Split, Split, Split]:
    """Write n decoded (side, side, 3) uint8 images, in source order, as float32 CHW rows / 255
    straight into the train / validation / test tensors of the seeded split (one copy in memory)."""
    from tqdm.auto import tqdm

    dim = 3 * side * side
    n_hold = _holdout_size(n, what)
    _check_memory(n, dim, what)
    perm, split, row = _split_slots(n, n_hold)
    n_tr = n - 2 * n_hold
    xs = [torch.empty(n_tr, dim), torch.empty(n_hold, dim), torch.empty(n_hold, dim)]
    views = [x.numpy() for x in xs]
    count = 0
    for i, a in enumerate(tqdm(arrays, total=n, desc=f"reading {what}", unit="img", disable=None, leave=False)):
        if i >= n:
            break
        if a.shape != (side, side, 3):  # the transforms guarantee it
            raise AssertionError(f"image {i} of {what} has shape {a.shape}")
        np.divide(a.transpose(2, 0, 1).reshape(-1), np.float32(255.0), out=views[split[i]][row[i]])
        count += 1
    if count != n:
        raise DataError(f"{what} gave {count} images, expected {n}: the data changed while being read; try again")
    ys = [labels[perm[:n_tr]], labels[perm[n_tr + n_hold :]], labels[perm[n_tr : n_tr + n_hold]]]
    train, val, test = (Split(x, torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))) for x, y in zip(xs, ys))
    return train, val, test


def _load_image_files(
    name: str,
    source: Path,
    files: list[Path],
    labels: np.ndarray,
    side: int,
    transform: Transform,
    classes: tuple[str, ...] = (),
) -> Dataset:
    def arrays() -> Iterator[np.ndarray]:
        for f in files:
            yield np.asarray(transform(_decode(f, _shown(f)), _shown(f)), dtype=np.uint8)

    train, val, test = _collect(arrays(), len(files), labels, side, f"{name} ({_shown(source)})")
    return Dataset(name, train, val, test, (3, side, side), str(source), classes)


def load_image_folder(
    data_dir: str | os.PathLike[str] | None = None, image_size: int = 64, max_images: int | None = None
) -> Dataset:
    """Any folder of images (searched recursively for .png, .jpg, .jpeg, .webp, .bmp; hidden files
    skipped), as RGB squares of ``image_size``: the shorter side resized to ``image_size`` (PIL
    bilinear, antialiased), then a centre crop (offset ``(long - image_size) // 2``).

    Labels: when every image sits in a sub-folder, the index of its immediate sub-folder's name
    among the sorted names (``classes``); otherwise all zeros. ``max_images`` keeps the first
    images in sorted path order. Splits: seeded (seed 42) permutation; the last 5% validation,
    the 5% before them test, the rest train (at least one image each).
    """
    _check_image_args(image_size, max_images)
    folder = data_root(data_dir)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist: point --data-dir at a folder of images")
    files = _list_images(folder)
    if not files:
        raise DataError(
            f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}, searched recursively): "
            "point --data-dir at a folder of images"
        )
    rel = [f.relative_to(folder).parts for f in files]
    classes: tuple[str, ...] = ()
    labels = np.zeros(len(files), np.int64)
    if all(len(r) >= 2 for r in rel):
        classes = tuple(sorted({r[0] for r in rel}))
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[r[0]] for r in rel], dtype=np.int64)
    if max_images is not None:
        files, labels = files[:max_images], labels[:max_images]
    return _load_image_files(
        "image-folder", folder, files, labels, image_size, _resize_short_side_crop(image_size), classes
    )


def _find_celeba_folder(root: Path) -> Path | None:
    for cand in (root / CELEBA_FOLDER, root / "celeba" / CELEBA_FOLDER):
        if cand.is_dir():
            return cand
    if root.is_dir() and any(p.suffix.lower() in (".jpg", ".jpeg") for p in root.iterdir()):
        return root  # the data root is the image folder itself
    return None


def load_celeba(
    data_dir: str | os.PathLike[str] | None = None, max_images: int | None = None, image_size: int = 64
) -> Dataset:
    """Aligned CelebA (``img_align_celeba``: 202,599 JPEGs of 178 x 218), preprocessed as in DCGAN.

    The folder is ``img_align_celeba`` or ``celeba/img_align_celeba`` under the data root, or the
    data root itself when it holds the JPEGs. Each image: the centre 108 x 108 crop (offsets
    35, 55 on 178 x 218: the usual choice for aligned CelebA), resized to ``image_size`` (64) with
    PIL's antialiased bilinear filter, RGB / 255 in [0, 1] (``image_shape`` (3, 64, 64)). No
    labels: ``y`` is zeros. ``max_images`` keeps the first images in file-name order: all of
    CelebA as float32 takes about 10 GB. Splits: seeded (seed 42) permutation; the last 5%
    validation, the 5% before them test, the rest train (the official partition is not used).
    """
    _check_image_args(image_size, max_images)
    root = data_root(data_dir)
    folder = _find_celeba_folder(root)
    if folder is None:
        raise DataError(
            f"CelebA not found in {root}: unzip img_align_celeba.zip (from "
            "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) so that "
            f"{root / CELEBA_FOLDER} holds 000001.jpg ..., or point --data-dir at that folder"
        )
    files = _list_images(folder, recursive=False)
    if not files:
        raise DataError(f"{folder} holds no images: it should hold CelebA's 000001.jpg ...")
    if max_images is not None:
        files = files[:max_images]
    labels = np.zeros(len(files), np.int64)
    return _load_image_files("celeba", folder, files, labels, image_size, _celeba_transform(image_size))


def _import_lmdb() -> Any:
    try:
        import lmdb
    except ImportError:
        raise DataError(
            "reading an LSUN lmdb export needs the lmdb package: pip install steinebm[lsun] (or pip install lmdb)"
        ) from None
    return lmdb


def _load_lsun_lmdb(folder: Path, max_images: int | None, size: int) -> Dataset:
    lmdb = _import_lmdb()
    try:
        env = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1)
    except lmdb.Error as e:
        raise DataError(
            f"{folder} is not a readable lmdb database ({_one_line(e)}): point --data-dir at LSUN's *_lmdb folder"
        ) from None
    transform = _resize_short_side_crop(size)
    what = f"lsun ({folder})"
    try:
        with env.begin(write=False) as txn:
            n = int(txn.stat()["entries"])
            if max_images is not None:
                n = min(n, max_images)
            if n == 0:
                raise DataError(f"the lmdb database in {folder} is empty: point --data-dir at an LSUN export")

            def arrays() -> Iterator[np.ndarray]:
                for key, value in txn.cursor():
                    name = f"{folder} key {bytes(key).decode('utf-8', 'replace')!r}"
                    yield np.asarray(transform(_decode(bytes(value), name), name), dtype=np.uint8)

            train, val, test = _collect(arrays(), n, np.zeros(n, np.int64), size, what)
    except lmdb.Error as e:
        raise DataError(f"cannot read the lmdb database in {folder} ({_one_line(e)}); check the export") from None
    finally:
        env.close()
    return Dataset("lsun", train, val, test, (3, size, size), str(folder))


def load_lsun(
    data_dir: str | os.PathLike[str] | None = None, max_images: int | None = None, image_size: int = 64
) -> Dataset:
    """LSUN (one category, e.g. bedrooms) from its lmdb export or from a folder of images.

    The data root (or its ``lsun/`` sub-folder) is either the lmdb folder holding ``data.mdb``
    (key -> encoded webp / jpeg bytes, read in key order; needs the optional ``lmdb`` package:
    ``pip install steinebm[lsun]``) or a folder of images (searched recursively). Each image:
    shorter side resized to ``image_size`` (64; PIL bilinear, antialiased), centre crop, RGB / 255.
    No labels: ``y`` is zeros. ``max_images`` keeps the first images (LSUN bedrooms alone hold 3
    million). Splits: seeded (seed 42) permutation; the last 5% validation, the 5% before them
    test, the rest train.
    """
    _check_image_args(image_size, max_images)
    root = data_root(data_dir)
    for cand in (root, root / "lsun"):
        if (cand / "data.mdb").is_file():
            return _load_lsun_lmdb(cand, max_images, image_size)
    folder = root / "lsun" if (root / "lsun").is_dir() else root
    files = _list_images(folder) if folder.is_dir() else []
    if not files:
        raise DataError(
            f"LSUN not found in {root}: point --data-dir at an LSUN lmdb folder (the one holding data.mdb, "
            "e.g. bedroom_train_lmdb) or at a folder of images"
        )
    if max_images is not None:
        files = files[:max_images]
    labels = np.zeros(len(files), np.int64)
    return _load_image_files("lsun", folder, files, labels, image_size, _resize_short_side_crop(image_size))


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    max_images: int | None = None,
    image_size: int = 64,
) -> Dataset:
    """Load one of :data:`DATASETS` by name.

    ``download`` applies to mnist, fashion-mnist and cifar10; ``max_images`` and ``image_size``
    to celeba, lsun and image-folder (the others ignore them).
    """
    if name == "mnist":
        return load_mnist(data_dir, download)
    if name == "mnist-embedded":
        return load_mnist_embedded()
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, download)
    if name == "idx":
        return load_idx(data_dir)
    if name == "cifar10":
        return load_cifar10(data_dir, download)
    if name == "celeba":
        return load_celeba(data_dir, max_images=max_images, image_size=image_size)
    if name == "lsun":
        return load_lsun(data_dir, max_images=max_images, image_size=image_size)
    if name == "image-folder":
        return load_image_folder(data_dir, image_size=image_size, max_images=max_images)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
