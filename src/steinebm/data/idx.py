"""MNIST and Fashion-MNIST from their original IDX files (checksummed), the embedded MNIST subset,
and any folder of IDX files."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from steinebm.checksums import digest
from steinebm.data.base import (
    REFETCH,
    SPLIT_SEED,
    Dataset,
    Split,
    _check_memory,
    _holdout_size,
    _shown,
    _split_train_val,
    _to_unit,
    data_root,
)
from steinebm.data.fetch import _download
from steinebm.errors import DataError, first_line
from steinebm.shapes import MNIST_SHAPE

__all__ = [
    "read_idx",
    "load_mnist",
    "load_fashion_mnist",
    "load_mnist_embedded",
    "load_idx",
    "MNIST_FILES",
    "MNIST_CONTENT",
    "MNIST_MIRRORS",
    "SUBSET_FILES",
    "MNIST_N_VAL",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_CONTENT",
    "FASHION_MNIST_MIRRORS",
    "FASHION_MNIST_CLASSES",
    "IDX_VAL_FRACTION",
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
MNIST_N_VAL = 10_000  # MNIST and Fashion-MNIST: validation images taken from the 60,000 training images
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
        raise DataError(f"{path} is not a readable gzip file ({first_line(e)}); {fix}") from None


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
        raise DataError(f"cannot read {_shown(path)} ({e.strerror or first_line(e)}); {fix}") from None
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
            f"cannot read {path} ({e.strerror or first_line(e)}): replace it with the original file"
        ) from None
    got = digest(blob, "md5")
    if got == md5:
        return _parse_idx(_gunzip(blob, path, REFETCH), path, ndim, REFETCH)
    arr: np.ndarray | None = None
    got_content = ""
    try:
        raw = _gunzip(blob, path, REFETCH)
        arr = _parse_idx(raw, path, ndim, REFETCH)
        got_content = digest(raw, "md5")
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


def _find_known_folder(root: Path, names: Iterable[str], sub: str) -> Path | None:
    for cand in (root, root / sub):
        if all((cand / n).exists() for n in names):
            return cand
    return None


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
        if x.shape[1:] != MNIST_SHAPE[1:]:
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
    return Dataset(name, train, val, Split(to_x(xte), to_y(yte)), MNIST_SHAPE, str(folder), classes)


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
        raise DataError(f"cannot list {folder} ({e.strerror or first_line(e)}): check the folder") from None
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
