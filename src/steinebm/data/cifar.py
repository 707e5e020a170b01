"""CIFAR-10 from the original Python pickle batches, checksummed and read with a restricted
unpickler (no code of the file runs)."""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from steinebm.data.base import Dataset, Split, _split_train_val, _to_unit, data_root
from steinebm.data.fetch import _check_md5, _fetch, _safe_extract
from steinebm.errors import DataError, first_line
from steinebm.shapes import CIFAR_DIM, CIFAR_SHAPE

__all__ = [
    "load_cifar10",
    "read_cifar_batch",
    "read_cifar_meta",
    "CIFAR10_FOLDER",
    "CIFAR10_FILES",
    "CIFAR10_URL",
    "CIFAR10_ARCHIVE_MD5",
    "CIFAR10_N_VAL",
]

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
        raise DataError(f"cannot read {path} ({first_line(e)}); check the file and its permissions") from None
    except Exception as e:  # any malformation: UnpicklingError, EOFError, ValueError, TypeError, ...
        detail = type(e).__name__ + (f": {first_line(e)}" if str(e).strip() else "")
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
    if data.shape[1] != CIFAR_DIM:
        raise DataError(f"{bad} ('data' has {data.shape[1]} columns, expected {CIFAR_DIM}); delete it")
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
    return Dataset(name, train, val, test, CIFAR_SHAPE, str(folder), classes)


def _download_cifar10(folder: Path) -> Path:
    archive = folder / "cifar-10-python.tar.gz"
    _fetch(CIFAR10_URL, archive, CIFAR10_ARCHIVE_MD5, f": download it yourself and extract it in {folder}")
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
