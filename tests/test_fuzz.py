"""Bad input, proven by fuzzing: malformed dataset files and configs give a one-line UserError.

Property-based tests (hypothesis) over the IDX (MNIST) reader, the CIFAR-10 pickle-batch reader,
the image-folder, CelebA and LSUN readers, the download caches and the config loader. The
property is always the same: a malformed input raises a :class:`steinebm.errors.UserError`
subclass whose message is one line, and through the command line exits with status 2; any other
exception fails the test. Where a generated input may by chance still be well formed (a flipped
pixel byte, garbage that PIL can decode), the test has an oracle that says which outcome is right.

Every test is derandomized (the same examples on every run, so CI is stable), keeps no example
database and has no deadline (the machine may be busy). Generated inputs per run (``max_examples``
below; hypothesis may stop earlier only where a strategy runs out of distinct inputs):

- IDX / MNIST: 150 payloads + 100 gzip streams + 60 folders (structure) + 40 folders (md5)
  + 15 download mirrors = 365
- CIFAR-10: 200 batch objects + 100 byte mutations + 40 folders (structure) + 30 folders (md5)
  + 40 memory bombs + 60 code-running pickles + 30 download archives = 500
- images: 100 image folders + 30 CelebA + 30 LSUN folders + 20 LSUN lmdb + 40 bad arguments = 220
- config: 100 unknown keys + 150 wrong types + 150 out-of-range values + 120 malformed YAML
  + 60 override texts = 580
- command line: 30 configs + 10 datasets = 40

In all 1,705; all but about 30 (byte flips that hit a pixel, override texts that happen to be
valid: ``--hypothesis-show-statistics`` counts them as "well formed after all") are malformed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import gzip
import hashlib
import importlib.util
import io
import math
import os
import pickle
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from steinebm import data as D
from steinebm.cli import main as cli_main
from steinebm.data import cifar as DC
from steinebm.data import fetch as DF
from steinebm.data import idx as DI
from steinebm.data import images as DM
from steinebm.engine.config import CHOICES, Config
from steinebm.engine.config_file import load_config
from steinebm.errors import ConfigError, DataError, UserError

HERE = Path(__file__).resolve().parent
SUBSET = Path(D.__file__).parents[1] / "assets" / "mnist-subset"


def _sibling(name: str) -> ModuleType:
    """The writers of tiny real-format files live in the data tests; pytest imports test modules
    in importlib mode (not on sys.path), so load them by path."""
    spec = importlib.util.spec_from_file_location(f"_fuzz_helpers_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_mnist_helpers = _sibling("test_data")
_image_helpers = _sibling("test_data_images")
_write_idx: Callable[[Path, np.ndarray], None] = _mnist_helpers._write_idx
_write_cifar: Callable[..., dict[str, str]] = _image_helpers._write_cifar
_cifar_images: Callable[[int, int], np.ndarray] = _image_helpers._cifar_images
_Call: Any = _image_helpers._Call
_save: Callable[[Path, np.ndarray], None] = _image_helpers._save
_solid: Callable[[int, int, int], np.ndarray] = _image_helpers._solid
_encoded: Callable[[np.ndarray, str], bytes] = _image_helpers._encoded
_tar: Callable[..., str] = _image_helpers._tar


def fuzz(n: int) -> Callable[[Any], Any]:
    """Reproducible settings: derandomized, no example database, no deadline on a busy machine."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


def assert_one_line_error(call: Callable[[], Any], kind: type[UserError] = UserError) -> UserError:
    """Run ``call``; it must raise ``kind`` with a non-empty one-line message. Any other exception
    propagates and fails the test."""
    try:
        result = call()
    except kind as e:
        msg = str(e)
        assert msg.strip(), "an empty error message"
        assert "\n" not in msg and "\r" not in msg, f"a multi-line error message: {msg!r}"
        return e
    raise AssertionError(f"malformed input accepted: got {type(result).__name__}")


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per example (pytest's tmp_path is one per test, shared by all examples)."""
    with tempfile.TemporaryDirectory(prefix="steinebm-fuzz-") as d:
        yield Path(d)


def _md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _md5s(folder: Path, names: Any) -> dict[str, str]:
    return {n: _md5_bytes((folder / n).read_bytes()) for n in names}


# --- IDX (MNIST) -----------------------------------------------------------------------------------


def _idx_payload(arr: np.ndarray) -> bytes:
    """The uncompressed IDX bytes of a uint8 array (what ``_write_idx`` gzips)."""
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


@st.composite
def idx_arrays(draw: st.DrawFn) -> np.ndarray:
    ndim = draw(st.sampled_from([1, 3]))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    return (np.arange(math.prod(shape), dtype=np.int64) * 37 % 256).astype(np.uint8).reshape(shape)


# dims near the 32-bit limit: their product overflows a 64-bit integer
_BIG_DIMS = st.sampled_from([0, 1, 2, 3, 4, 8, 2**16, 2**31, 2**32 - 1])


@st.composite
def malformed_idx_payloads(draw: st.DrawFn) -> tuple[bytes, int]:
    """A gzip-intact IDX file whose payload is wrong: (payload, the ndim the reader expects)."""
    arr = draw(idx_arrays())
    good, expect = _idx_payload(arr), arr.ndim
    kind = draw(st.sampled_from(["truncated", "extended", "magic", "ndim", "dims"]))
    if kind == "truncated":
        return good[: draw(st.integers(0, len(good) - 1))], expect
    if kind == "extended":
        return good + draw(st.binary(min_size=1, max_size=16)), expect
    if kind == "magic":
        magic = draw(st.binary(min_size=4, max_size=4).filter(lambda m: m != good[:4]))
        return magic + good[4:], expect
    if kind == "ndim":  # an images file where labels are expected, or the other way round
        return good, 4 - arr.ndim
    dims = draw(
        st.lists(st.one_of(st.integers(0, 9), _BIG_DIMS), min_size=arr.ndim, max_size=arr.ndim).filter(
            lambda ds: math.prod(ds) != arr.size
        )
    )
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *dims)
    return header + arr.tobytes(), expect


@fuzz(150)
@given(malformed_idx_payloads())
def test_fuzz_idx_payload(case: tuple[bytes, int]) -> None:
    payload, expect = case
    with scratch() as d:
        p = d / "x-idx-ubyte.gz"
        p.write_bytes(gzip.compress(payload, mtime=0))
        assert_one_line_error(lambda: D.read_idx(p, expect), DataError)


@st.composite
def corrupt_gzip_streams(draw: st.DrawFn) -> tuple[bytes, np.ndarray, bool]:
    """(file bytes, the array it was made from, whether a correct read is impossible)."""
    arr = draw(idx_arrays())
    gz = gzip.compress(_idx_payload(arr), mtime=0)
    kind = draw(st.sampled_from(["cut", "two-members", "not-gzip", "garbage-body", "flip"]))
    if kind == "cut":
        return gz[: draw(st.integers(0, len(gz) - 1))], arr, True
    if kind == "two-members":  # gzip concatenates members: the payload is there twice
        return gz + gz, arr, True
    if kind == "not-gzip":
        return draw(st.binary(max_size=64).filter(lambda b: not b.startswith(b"\x1f\x8b"))), arr, True
    if kind == "garbage-body":  # a gzip header, then anything
        return gz[:10] + draw(st.binary(min_size=1, max_size=64)), arr, False
    # a flipped byte past the header (mtime and OS bytes of the header do not matter)
    pos = draw(st.integers(10, len(gz) - 1))
    raw = bytearray(gz)
    raw[pos] ^= draw(st.integers(1, 255))
    return bytes(raw), arr, False


@fuzz(100)
@given(corrupt_gzip_streams())
def test_fuzz_idx_gzip_layer(case: tuple[bytes, np.ndarray, bool]) -> None:
    """A damaged gzip stream: a DataError, or (where the damage left a readable stream) the
    original array; never zlib's own error."""
    blob, arr, must_fail = case
    with scratch() as d:
        p = d / "x-idx-ubyte.gz"
        p.write_bytes(blob)
        if must_fail:
            assert_one_line_error(lambda: D.read_idx(p, arr.ndim), DataError)
            return
        try:
            got = D.read_idx(p, arr.ndim)
        except DataError as e:
            assert "\n" not in str(e)
        else:
            event("well formed after all")
            assert got.dtype == np.uint8 and got.ndim == arr.ndim


def test_idx_corrupt_deflate_data_is_a_data_error(tmp_path: Path) -> None:
    """Found by fuzzing: damaged deflate data raised zlib.error, which read_idx did not catch."""
    gz = bytearray(gzip.compress(_idx_payload(np.arange(400, dtype=np.uint8).reshape(4, 10, 10)), mtime=0))
    gz[12] ^= 0xFF
    (tmp_path / "a.gz").write_bytes(bytes(gz))
    e = assert_one_line_error(lambda: D.read_idx(tmp_path / "a.gz", 3), DataError)
    assert "gzip" in str(e) and "delete it" in str(e)


def test_idx_dims_whose_product_overflows(tmp_path: Path) -> None:
    """dims of 2**31 * 2**31 * 4 wrapped to 0 in int64, so an empty body "matched" the header and
    the reshape raised ValueError (the fuzzer rarely hits the exact wrap, hence this case)."""
    (tmp_path / "a.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 2**31, 2**31, 4)))
    e = assert_one_line_error(lambda: D.read_idx(tmp_path / "a.gz", 3), DataError)
    assert "header says" in str(e)


MNIST_DEFECTS = [
    "image-size",
    "labels-out-of-range",
    "count-mismatch",
    "no-test-images",
    "too-few-train",
    "labels-as-images",
    "images-as-labels",
]


@st.composite
def malformed_mnist_folders(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], int, str]:
    """Four IDX arrays (file name -> array) with one defect the md5 check cannot see (the files
    are written by the test, and their md5s handed to the reader), and the validation size."""
    defect = draw(st.sampled_from(MNIST_DEFECTS))
    n_tr, n_te, n_val = draw(st.integers(3, 5)), draw(st.integers(1, 3)), 1
    size_tr = size_te = (28, 28)
    if defect == "image-size":
        bad = draw(st.tuples(st.integers(1, 30), st.integers(1, 30)).filter(lambda s: s != (28, 28)))
        which = draw(st.sampled_from(["train", "test", "both"]))
        size_tr = bad if which in ("train", "both") else size_tr
        size_te = bad if which in ("test", "both") else size_te
    if defect == "no-test-images":
        n_te = 0
    if defect == "too-few-train":
        n_val = draw(st.integers(n_tr, n_tr + 3))
    ytr = np.array([i % 10 for i in range(n_tr)], np.uint8)
    yte = np.array([(i + 3) % 10 for i in range(n_te)], np.uint8)
    if defect == "labels-out-of-range":
        target = draw(st.sampled_from([ytr, yte]))
        target[draw(st.integers(0, len(target) - 1))] = draw(st.integers(10, 255))
    if defect == "count-mismatch":
        extra = draw(st.integers(-2, 3).filter(lambda k: k != 0))
        ytr = np.array([i % 10 for i in range(max(0, n_tr + extra))], np.uint8)
    arrays = {
        "train-images-idx3-ubyte.gz": np.full((n_tr, *size_tr), 7, np.uint8),
        "train-labels-idx1-ubyte.gz": ytr,
        "t10k-images-idx3-ubyte.gz": np.full((n_te, *size_te), 9, np.uint8),
        "t10k-labels-idx1-ubyte.gz": yte,
    }
    if defect == "labels-as-images":
        arrays["train-labels-idx1-ubyte.gz"] = np.zeros((n_tr, 28, 28), np.uint8)
    if defect == "images-as-labels":
        arrays[draw(st.sampled_from(["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"]))] = np.zeros(
            5, np.uint8
        )
    return arrays, n_val, defect


@fuzz(60)
@given(malformed_mnist_folders())
def test_fuzz_mnist_folder_structure(case: tuple[dict[str, np.ndarray], int, str]) -> None:
    """The structural path behind the md5 check: files whose md5s the reader is told to expect."""
    arrays, n_val, _ = case
    with scratch() as d:
        for name, arr in arrays.items():
            _write_idx(d / name, arr)
        assert_one_line_error(lambda: DI._read_mnist_folder(d, _md5s(d, arrays), n_val, "mnist"), DataError)


_MNIST_FILE_KINDS = st.sampled_from(["tiny-idx", "garbage", "empty", "folder", "subset-file-renamed"])


@fuzz(40)
@given(st.fixed_dictionaries({n: _MNIST_FILE_KINDS for n in DI.MNIST_FILES}), st.binary(min_size=1, max_size=64))
def test_fuzz_mnist_md5_path(kinds: dict[str, str], garbage: bytes) -> None:
    """load_mnist with files that are not the originals: the md5 check refuses them, one line,
    even where a "file" is a folder."""
    with scratch() as d:
        names = list(DI.MNIST_FILES)
        for i, (name, kind) in enumerate(kinds.items()):
            p = d / name
            if kind == "tiny-idx":
                _write_idx(p, np.zeros((2, 28, 28) if "images" in name else (2,), np.uint8))
            elif kind == "garbage":
                p.write_bytes(garbage)
            elif kind == "empty":
                p.write_bytes(b"")
            elif kind == "folder":
                p.mkdir()
            else:  # an original (subset) file under another file's name
                shutil.copy(SUBSET / names[(i + 1) % 4], p)
        e = assert_one_line_error(lambda: D.load_mnist(d, download=False), DataError)
        assert "md5" in str(e) or "cannot read" in str(e)


def test_mnist_file_that_is_a_folder(tmp_path: Path) -> None:
    """Found by fuzzing: a folder under an MNIST file's name raised IsADirectoryError from the md5."""
    for name in DI.MNIST_FILES:
        (tmp_path / name).mkdir()
    e = assert_one_line_error(lambda: D.load_mnist(tmp_path), DataError)
    assert "train-images-idx3-ubyte.gz" in str(e)


@pytest.fixture(scope="module")
def good_mnist_mirror() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="steinebm-mirror-") as d:
        shutil.copytree(SUBSET, Path(d) / "good")
        yield Path(d) / "good"


@fuzz(15)
@given(
    st.dictionaries(
        st.sampled_from(sorted(DI.SUBSET_FILES)), st.sampled_from(["garbage", "cut", "missing"]), min_size=1
    ),
    st.binary(max_size=32),
)
def test_fuzz_mnist_download_leaves_nothing_bad(good_mnist_mirror: Path, bad: dict[str, str], garbage: bytes) -> None:
    """A mirror serving damaged or missing files: a DataError, every file left in the cache is a
    verified original (no .part files; no folder where none was fetched), and a later download
    from a good mirror loads."""
    with scratch() as d:
        mirror = d / "mirror"
        shutil.copytree(good_mnist_mirror, mirror)
        for name, kind in bad.items():
            if kind == "missing":
                (mirror / name).unlink()
            else:
                raw = (mirror / name).read_bytes()
                (mirror / name).write_bytes(garbage if kind == "garbage" else raw[: len(raw) // 2])
        cache = d / "cache"
        with mock.patch.object(DI, "MNIST_MIRRORS", (mirror.as_uri() + "/",)):
            assert_one_line_error(lambda: DF._download(DI.SUBSET_FILES, cache, DI.MNIST_MIRRORS), DataError)
        # the cache folder exists only if a checked file was written into it
        for f in cache.iterdir() if cache.exists() else []:
            assert DI.SUBSET_FILES.get(f.name) == _md5_bytes(f.read_bytes()), f"unverified file left: {f.name}"
        assert cache.exists() == (next(iter(DI.SUBSET_FILES)) not in bad)
        with mock.patch.object(DI, "MNIST_MIRRORS", (good_mnist_mirror.as_uri() + "/",)):
            DF._download(DI.SUBSET_FILES, cache, DI.MNIST_MIRRORS)
        ds = DI._read_mnist_folder(cache, DI.SUBSET_FILES, 1000, "mnist")
        assert len(ds.test) == 1000


# --- CIFAR-10 ------------------------------------------------------------------------------------

_GOOD_BATCH = {b"batch_label": b"x", b"labels": [3, 1], b"data": _cifar_images(2, 5), b"filenames": [b"a", b"b"]}
_DTYPES = [np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint16, np.bool_, np.complex64, object]

_non_dicts = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(0, 9), max_size=4),
    st.tuples(st.just(_GOOD_BATCH[b"data"]), st.just([3, 1])),
    st.just(np.zeros((2, 3072), np.uint8)),
    st.just(set()),
    st.just(frozenset([1])),
)


@st.composite
def bad_cifar_data(draw: st.DrawFn, n: int) -> Any:
    kind = draw(st.sampled_from(["missing", "dtype", "ndim", "columns", "not-an-array"]))
    if kind == "missing":
        return _MISSING
    if kind == "dtype":
        return np.zeros((n, 3072), draw(st.sampled_from(_DTYPES)))
    if kind == "ndim":
        shape = draw(st.sampled_from([(n * 3072,), (n, 3, 1024), (n, 3, 32, 32), ()]))
        return np.zeros(shape, np.uint8)
    if kind == "columns":
        return np.zeros((n, draw(st.integers(0, 64) | st.sampled_from([3071, 3073, 1024]))), np.uint8)
    return draw(st.one_of(st.none(), st.binary(max_size=8), st.text(max_size=8), st.lists(st.integers(0, 255))))


_out_of_range = st.one_of(  # labels >= 10 or negative, up to beyond int64
    st.sampled_from([10, 255, -1, 2**63, 2**70, -(2**63) - 1]), st.integers(10, 2**80), st.integers(-(2**80), -1)
)
_not_an_int = st.one_of(
    st.text(max_size=4), st.binary(max_size=4), st.floats(), st.booleans(), st.none(), st.just(np.int64(3))
)


@st.composite
def bad_cifar_labels(draw: st.DrawFn, n: int) -> Any:
    """Labels that are wrong for n >= 1 images."""
    good = [i % 10 for i in range(n)]
    kind = draw(st.sampled_from(["missing", "element-type", "out-of-range", "length", "array", "container"]))
    if kind == "missing":
        return _MISSING
    if kind in ("element-type", "out-of-range"):
        good[draw(st.integers(0, n - 1))] = draw(_not_an_int if kind == "element-type" else _out_of_range)
        return good
    if kind == "length":
        return [i % 10 for i in range(draw(st.integers(0, n + 3).filter(lambda k: k != n)))]
    if kind == "array":
        return draw(
            st.sampled_from(
                [
                    np.array(good, np.float32),
                    np.array(good, np.int64).reshape(n, 1),
                    np.array([*good[:-1], 10], np.int64),
                    np.array([*good[:-1], -1], np.int64),
                    np.array([*good[:-1], 2**63 + 5], np.uint64),
                    np.array(good, object),
                    np.array([str(v) for v in good]),
                ]
            )
        )
    return draw(st.one_of(st.just(tuple(good)), st.just({0: good}), st.text(max_size=4), st.none(), st.integers()))


_MISSING = object()


@st.composite
def malformed_cifar_objects(draw: st.DrawFn) -> tuple[Any, int]:
    """(object to pickle, protocol): never a valid CIFAR-10 batch."""
    protocol = draw(st.integers(0, pickle.HIGHEST_PROTOCOL))
    kind = draw(st.sampled_from(["not-a-dict", "data", "labels", "both"]))
    if kind == "not-a-dict":
        return draw(_non_dicts), protocol
    n = draw(st.integers(0 if kind == "data" else 1, 3))
    d: dict[Any, Any] = {"data": _cifar_images(n, 1), "labels": [i % 10 for i in range(n)], "filenames": [b"f"] * n}
    if kind in ("data", "both"):
        d["data"] = draw(bad_cifar_data(n))
    if kind in ("labels", "both"):
        d["labels"] = draw(bad_cifar_labels(n))
    str_keys = draw(st.booleans())  # the reader takes b"data" (the original files) or "data"
    return {(k if str_keys else k.encode()): v for k, v in d.items() if v is not _MISSING}, protocol


@fuzz(200)
@given(malformed_cifar_objects())
def test_fuzz_cifar_batch_objects(case: tuple[Any, int]) -> None:
    obj, protocol = case
    with scratch() as d:
        p = d / "data_batch_1"
        p.write_bytes(pickle.dumps(obj, protocol=protocol))
        assert_one_line_error(lambda: D.read_cifar_batch(p), DataError)
        assert_one_line_error(lambda: D.read_cifar_meta(p), DataError)  # not a batches.meta either


def test_cifar_label_beyond_int64(tmp_path: Path) -> None:
    """Found by fuzzing: a label of 2**70 raised OverflowError while converting to int64."""
    for label in (2**70, -(2**70), 2**63):
        (tmp_path / "b").write_bytes(pickle.dumps({b"data": _cifar_images(1, 0), b"labels": [label]}, protocol=2))
        e = assert_one_line_error(lambda: D.read_cifar_batch(tmp_path / "b"), DataError)
        assert "outside 0..9" in str(e)


@st.composite
def mutated_batch_pickles(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(bytes, whether they can no longer be a valid batch): a valid batch pickle cut short or with
    a byte flipped (flips favour the opcodes and keys at the start, before the pixel bytes)."""
    good = pickle.dumps(_GOOD_BATCH, protocol=draw(st.integers(2, 4)))
    if draw(st.booleans()):
        return good[: draw(st.integers(0, len(good) - 1))], True
    pos = draw(st.integers(0, 160) | st.integers(len(good) - 80, len(good) - 1) | st.integers(0, len(good) - 1))
    raw = bytearray(good)
    raw[pos] ^= draw(st.integers(1, 255))
    return bytes(raw), False


@fuzz(100)
@given(mutated_batch_pickles())
def test_fuzz_cifar_batch_bytes(case: tuple[bytes, bool]) -> None:
    blob, must_fail = case
    with scratch() as d:
        p = d / "data_batch_1"
        p.write_bytes(blob)
        if must_fail:
            assert_one_line_error(lambda: D.read_cifar_batch(p), DataError)
            return
        try:
            x, y = D.read_cifar_batch(p)
        except DataError as e:
            assert "\n" not in str(e)
        else:  # the flip hit a pixel, a label or a name: still a well-formed batch
            event("well formed after all")
            assert x.dtype == np.uint8 and x.shape == (2, 3072) and y.dtype == np.int64
            assert y.shape == (2,) and 0 <= y.min() and y.max() <= 9


_bad_meta = st.one_of(
    st.just({b"label_names": [b"a"] * 9}),
    st.just({b"label_names": [b"a"] * 11}),
    st.just({b"label_names": [1] * 10}),
    st.just({b"label_names": tuple([b"a"] * 10)}),
    st.just({b"num_vis": 3072}),
    st.just([b"a"] * 10),
    _non_dicts,
)


@pytest.fixture(scope="module")
def cifar_template() -> Iterator[Path]:
    """A tiny, valid CIFAR-10 folder (4 images per batch, 6 test images) copied by each example."""
    with tempfile.TemporaryDirectory(prefix="steinebm-cifar-") as d:
        _write_cifar(Path(d) / "cifar-10-batches-py")
        yield Path(d) / "cifar-10-batches-py"


@fuzz(40)
@given(st.sampled_from(sorted(DC.CIFAR10_FILES) + ["n_val", "empty-test"]), st.data())
def test_fuzz_cifar_folder_structure(cifar_template: Path, target: str, data: st.DataObject) -> None:
    """One malformed file in an otherwise valid folder, with the md5 check satisfied (the reader
    is told the md5s of the files written here): the structural path."""
    with scratch() as d:
        folder = d / "c"
        shutil.copytree(cifar_template, folder)
        n_val = 5
        if target == "n_val":  # 20 training images cannot give 20 or more for validation
            n_val = data.draw(st.integers(20, 40))
        elif target == "empty-test":  # a well-formed batch of no images: nothing to test on
            empty = {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}
            (folder / "test_batch").write_bytes(pickle.dumps(empty, protocol=data.draw(st.integers(0, 4))))
        elif target == "batches.meta":
            (folder / target).write_bytes(pickle.dumps(data.draw(_bad_meta), protocol=2))
        else:
            obj, protocol = data.draw(malformed_cifar_objects())
            (folder / target).write_bytes(pickle.dumps(obj, protocol=protocol))
        md5s = _md5s(folder, DC.CIFAR10_FILES)
        assert_one_line_error(lambda: DC._read_cifar_folder(folder, md5s, n_val), DataError)


@fuzz(30)
@given(
    st.fixed_dictionaries({n: st.sampled_from(["synthetic", "garbage", "empty"]) for n in DC.CIFAR10_FILES}),
    st.binary(min_size=1, max_size=64),
)
def test_fuzz_cifar_md5_path(cifar_template: Path, kinds: dict[str, str], garbage: bytes) -> None:
    """load_cifar10 with files that are not the originals: refused by the md5 check, one line."""
    with scratch() as d:
        folder = d / "cifar-10-batches-py"
        shutil.copytree(cifar_template, folder)
        for name, kind in kinds.items():
            if kind != "synthetic":
                (folder / name).write_bytes(garbage if kind == "garbage" else b"")
        e = assert_one_line_error(lambda: D.load_cifar10(d, download=False), DataError)
        assert "has md5" in str(e)


@st.composite
def hostile_opcode_pickles(draw: st.DrawFn) -> bytes:
    """Tiny pickles whose opcodes ask for a huge memo index, frame, byte string or mark stack."""
    big = draw(st.integers(2**20, 2**32 - 1))
    big8 = draw(st.integers(2**20, 2**63 - 1)).to_bytes(8, "little")
    body = draw(
        st.sampled_from(
            [
                b"K\x01r" + big.to_bytes(4, "little"),  # LONG_BINPUT: memo index
                b"K\x01p" + str(big).encode() + b"\n",  # PUT: memo index, as text
                b"\x95" + big8 + b"K\x01",  # FRAME
                b"\x8e" + big8,  # BINBYTES8
                b"\x8d" + big8,  # BINUNICODE8
                b"\x96" + big8,  # BYTEARRAY8
                b"\x8b" + big.to_bytes(4, "little"),  # LONG4
                b"j" + big.to_bytes(4, "little"),  # LONG_BINGET
                b"\x84" + big.to_bytes(4, "little"),  # EXT4
                b"L" + b"9" * 5000 + b"L\n",  # LONG, more digits than int() takes
                b"(" * 20000 + b"K\x01",  # MARK after MARK
            ]
        )
    )
    return b"\x80" + bytes([draw(st.integers(2, 5))]) + body + b"."


@fuzz(40)
@given(hostile_opcode_pickles())
def test_fuzz_cifar_pickle_memory_bombs(blob: bytes) -> None:
    """A few bytes must not make the reader take gigabytes (it did: the C unpickler zero-fills a
    memo array as large as a PUT opcode's index, 1 GB for an index of 2**26)."""
    with scratch() as d:
        p = d / "data_batch_1"
        p.write_bytes(blob)
        tracemalloc.start()
        try:
            assert_one_line_error(lambda: D.read_cifar_batch(p), DataError)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB for a {len(blob)}-byte file"


def test_memo_index_bomb(tmp_path: Path) -> None:
    """Found by fuzzing (byte flips turned a BINPUT into a LONG_BINPUT): 10 bytes took 4 GB."""
    (tmp_path / "b").write_bytes(b"\x80\x02K\x01r" + (2**28).to_bytes(4, "little") + b".")
    tracemalloc.start()
    try:
        e = assert_one_line_error(lambda: D.read_cifar_batch(tmp_path / "b"), DataError)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "not a dict" in str(e) and peak < 2**20


# code-running pickles: each gadget, once unpickled by a plain unpickler, creates the marker file
def _gadgets(marker: Path) -> dict[str, Any]:
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": _Call(os.system, f"touch {shlex.quote(str(marker))}"),
        "eval": _Call(eval, touch),
        "exec": _Call(exec, touch),
        "open": _Call(open, str(marker), "w"),
        "subprocess": _Call(subprocess.call, ["touch", str(marker)]),
        "getattr": _Call(getattr, Path(marker), "touch"),
    }


def test_gadgets_are_real(tmp_path: Path) -> None:
    """The payloads fuzzed below do run code under a plain unpickler: the refusal is what stops them."""
    for name in _gadgets(tmp_path / "m"):
        marker = tmp_path / f"marker-{name}"
        result = pickle.loads(pickle.dumps(_gadgets(marker)[name], protocol=2))
        if name == "getattr":
            result()  # getattr hands back the bound method; the file's reduce would then call it
        if name == "open":
            result.close()
        assert marker.exists(), name


_PLACES = ["top", "data", "label", "filenames", "nested", "meta-name"]


@fuzz(60)
@given(st.sampled_from(sorted(_gadgets(Path("m")))), st.sampled_from(_PLACES), st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_fuzz_code_running_pickles_are_refused(gadget: str, place: str, protocol: int) -> None:
    """A pickle whose unpickling would run code, wherever in the batch or batches.meta it sits and
    whatever the protocol: refused, and the marker file never appears."""
    with scratch() as d:
        marker = d / "pwned"
        g = _gadgets(marker)[gadget]
        good: dict[Any, Any] = {b"data": _cifar_images(1, 2), b"labels": [4]}
        obj: Any = {
            "top": g,
            "data": {**good, b"data": g},
            "label": {**good, b"labels": [g]},
            "filenames": {**good, b"filenames": {b"x": g}},
            "nested": {**good, b"batch_label": (b"x", [g])},
            "meta-name": {b"label_names": [b"airplane"] * 9 + [g]},
        }[place]
        p = d / ("batches.meta" if place == "meta-name" else "data_batch_1")
        p.write_bytes(pickle.dumps(obj, protocol=protocol))
        read = D.read_cifar_meta if place == "meta-name" else D.read_cifar_batch
        e = assert_one_line_error(lambda: read(p), DataError)
        assert "refused" in str(e)
        assert not marker.exists()


def test_code_running_meta_is_refused_through_load_cifar10(tmp_path: Path) -> None:
    """The batches.meta path of the public loader, with the md5 check satisfied."""
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    md5s = _write_cifar(folder)
    marker = tmp_path / "pwned"
    (folder / "batches.meta").write_bytes(pickle.dumps(_gadgets(marker)["os.system"], protocol=2))
    md5s["batches.meta"] = _md5_bytes((folder / "batches.meta").read_bytes())
    with mock.patch.object(DC, "CIFAR10_FILES", md5s), mock.patch.object(DC, "CIFAR10_N_VAL", 5):
        e = assert_one_line_error(lambda: D.load_cifar10(tmp_path, download=False), DataError)
    assert "batches.meta asks to load" in str(e) and "refused" in str(e)
    assert not marker.exists()


ARCHIVE_DEFECTS = [
    "garbage-file",
    "malformed-pickle",
    "code-running-pickle",
    "missing-file",
    "not-gzip",
    "truncated",
    "unsafe-member",
    "link",
    "no-folder",
]


@fuzz(30)
@given(st.sampled_from(ARCHIVE_DEFECTS), st.sampled_from(sorted(DC.CIFAR10_FILES)), st.booleans(), st.data())
def test_fuzz_cifar_download_leaves_nothing_bad(
    cifar_template: Path, defect: str, target: str, archive_md5_matches: bool, data: st.DataObject
) -> None:
    """A damaged cifar-10-python.tar.gz, its own md5 check satisfied or not: a DataError, no
    temporary files left, and a later download of a good archive into the same cache loads."""
    good_md5s = _md5s(cifar_template, DC.CIFAR10_FILES)
    with scratch() as d:
        files = {f"cifar-10-batches-py/{n}": (cifar_template / n).read_bytes() for n in DC.CIFAR10_FILES}
        member = f"cifar-10-batches-py/{target}"
        links: tuple[str, ...] = ()
        marker = d / "pwned"
        if defect == "garbage-file":
            files[member] = data.draw(st.binary(max_size=64))
        elif defect == "malformed-pickle":
            obj, protocol = data.draw(malformed_cifar_objects())
            files[member] = pickle.dumps(obj, protocol=protocol)
        elif defect == "code-running-pickle":
            files[member] = pickle.dumps(_gadgets(marker)["os.system"], protocol=2)
        elif defect == "missing-file":
            del files[member]
        elif defect == "unsafe-member":
            files["cifar-10-batches-py/../../evil"] = b"x"
        elif defect == "link":
            del files[member]
            links = (member,)
        elif defect == "no-folder":
            files = {n.replace("cifar-10-batches-py/", "other/"): b for n, b in files.items()}
        archive = d / "mirror" / "cifar-10-python.tar.gz"
        archive.parent.mkdir()
        _tar(archive, files, links)
        if defect == "not-gzip":
            archive.write_bytes(data.draw(st.binary(max_size=64)))
        elif defect == "truncated":
            raw = archive.read_bytes()
            archive.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
        bad_md5 = _md5_bytes(archive.read_bytes()) if archive_md5_matches else "0" * 32
        cache = d / "cache"
        env = {k: v for k, v in os.environ.items() if k not in ("STEINEBM_OFFLINE", "STEINEBM_DATA")}
        with (
            mock.patch.dict(os.environ, env, clear=True),
            mock.patch.multiple(
                DC, CIFAR10_URL=archive.as_uri(), CIFAR10_ARCHIVE_MD5=bad_md5, CIFAR10_FILES=good_md5s, CIFAR10_N_VAL=5
            ),
        ):
            assert_one_line_error(lambda: D.load_cifar10(cache), DataError)
            assert not marker.exists()
            left = [p.name for p in cache.rglob("*") if p.name.endswith(".part") or p.name.startswith(".extract-")]
            assert not left, f"temporary files left: {left}"
            good_archive = d / "good" / "cifar-10-python.tar.gz"
            good_archive.parent.mkdir()
            files = {f"cifar-10-batches-py/{n}": (cifar_template / n).read_bytes() for n in DC.CIFAR10_FILES}
            with mock.patch.multiple(
                DC, CIFAR10_URL=good_archive.as_uri(), CIFAR10_ARCHIVE_MD5=_tar(good_archive, files)
            ):
                ds = D.load_cifar10(cache)  # nothing the bad download left behind gets in the way
        assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 6)


def test_archive_with_wrong_contents_is_not_extracted(cifar_template: Path, tmp_path: Path) -> None:
    """Found by fuzzing: an archive that passed its md5 check but held a file that fails its own
    was extracted anyway, and the bad file then failed every later load ("delete it and fetch it
    again" with no way to fetch over it). The files are now checked before any is moved in."""
    files = {f"cifar-10-batches-py/{n}": (cifar_template / n).read_bytes() for n in DC.CIFAR10_FILES}
    files["cifar-10-batches-py/test_batch"] = b"tampered"
    archive = tmp_path / "a.tar.gz"
    _tar(archive, files)
    dest = tmp_path / "out"
    dest.mkdir()
    good = _md5s(cifar_template, DC.CIFAR10_FILES)
    e = assert_one_line_error(lambda: DF._safe_extract(archive, dest, "cifar-10-batches-py", good), DataError)
    assert "test_batch" in str(e) and "md5" in str(e)
    assert not any(p.is_file() for p in dest.rglob("*"))


# --- image folders, CelebA, LSUN -------------------------------------------------------------------

_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}
_ENCODED = {ext: _encoded(np.full((6, 6, 3), 90, np.uint8), fmt) for ext, fmt in _FORMATS.items()}
_MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8L", b"GIF89a", b"P6\n"]


@st.composite
def bad_image_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(extension, file bytes) of an image file that is empty, garbage, truncated or text."""
    ext = draw(st.sampled_from(sorted(_FORMATS)))
    kind = draw(st.sampled_from(["empty", "garbage", "magic-then-garbage", "truncated", "text"]))
    if kind == "empty":
        blob = b""
    elif kind == "garbage":
        blob = draw(st.binary(min_size=1, max_size=64))
    elif kind == "magic-then-garbage":
        blob = draw(st.sampled_from(_MAGIC)) + draw(st.binary(max_size=64))
    elif kind == "truncated":
        good = _ENCODED[ext]
        blob = good[: draw(st.integers(1, len(good) // 2))]
    else:
        blob = draw(st.text(min_size=1, max_size=40)).encode()
    if draw(st.booleans()):
        ext = ext.upper()
    return ext, blob


# file names as a folder may hold them: anything but '/' and NUL, newlines and tabs included
_file_names = st.text(
    st.characters(codec="utf-8", exclude_characters="/\x00", exclude_categories=("Cs",)), min_size=1, max_size=10
).filter(lambda s: not s.startswith("."))


def _decodable(blob: bytes) -> bool:
    """The oracle: whether PIL reads these bytes as an image (random bytes now and then are one)."""
    try:
        with Image.open(io.BytesIO(blob)) as im:
            im.convert("RGB")
        return True
    except Exception:
        return False


@fuzz(100)
@given(
    st.lists(st.tuples(bad_image_files(), _file_names, st.sampled_from(["", "a/", "b/"])), min_size=1, max_size=2),
    st.integers(0, 3),
    st.integers(1, 8),
)
def test_fuzz_image_folder(bad: list[tuple[tuple[str, bytes], str, str]], n_good: int, size: int) -> None:
    """Good images mixed with corrupt, empty or garbage ones (fuzzed names): a one-line DataError
    unless every file is readable (and at least 3 images exist)."""
    with scratch() as root:
        for j in range(n_good):
            _save(root / "a" / f"good{j}.png", _solid(5 + j, 7, 40 * j))
        written: dict[Path, bytes] = {}
        for (ext, blob), name, sub in bad:
            p = root / sub / f"{name}{ext}"
            if p.exists():
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(blob)
            written[p] = blob
        fine = n_good + len(written) >= 3 and all(_decodable(b) for b in written.values())
        if fine:
            event("well formed after all")
            ds = D.load_image_folder(root, image_size=size)
            assert len(ds.train) + len(ds.val) + len(ds.test) == n_good + len(written)
        else:
            assert_one_line_error(lambda: D.load_image_folder(root, image_size=size), DataError)


def test_image_file_name_with_a_newline(tmp_path: Path) -> None:
    """Found by fuzzing: a file named with a newline made the error two lines; names are now
    shown escaped when they hold control characters."""
    for j in range(3):
        _save(tmp_path / f"{j}.png", _solid(4, 4, 9))
    (tmp_path / "bad\nname.png").write_bytes(b"garbage")
    e = assert_one_line_error(lambda: D.load_image_folder(tmp_path, image_size=4), DataError)
    assert "bad\\nname.png" in str(e)


@fuzz(30)
@given(
    st.one_of(bad_image_files(), st.tuples(st.integers(1, 107), st.integers(1, 300))),
    _file_names,
    st.booleans(),
)
def test_fuzz_celeba(bad: Any, name: str, in_subfolder: bool) -> None:
    """CelebA with a corrupt file or an image smaller than the 108 x 108 crop among good faces."""
    with scratch() as root:
        folder = root / "img_align_celeba" if in_subfolder else root
        for j in range(3):  # JPEGs: a data root that holds the images itself is found by them
            folder.mkdir(exist_ok=True)
            Image.fromarray(_solid(108, 110, 30 * j)).save(folder / f"{j:06d}.jpg")
        if isinstance(bad[1], bytes):
            ext, blob = bad
            (folder / f"{name}{ext}").write_bytes(blob)
            fine = _decodable(blob)  # readable garbage: the oracle below checks its size
            small = fine and min(Image.open(io.BytesIO(blob)).size) < DM.CELEBA_CROP
            fine = fine and not small
        else:
            w, h = bad
            _save(folder / f"{name}.png", _solid(w, h, 200))
            fine = False
        if fine:
            event("well formed after all")
            assert len(D.load_celeba(root, image_size=8).train) >= 1
        else:
            assert_one_line_error(lambda: D.load_celeba(root, image_size=8), DataError)


@fuzz(30)
@given(bad_image_files(), _file_names, st.sampled_from(["lsun/", "lsun/x/", ""]))
def test_fuzz_lsun_folder(bad: tuple[str, bytes], name: str, where: str) -> None:
    ext, blob = bad
    with scratch() as root:
        for j in range(3):
            _save(root / where / f"good{j}.png", _solid(9, 6, 50 * j))
        (root / where / f"{name}{ext}").write_bytes(blob)
        if _decodable(blob):
            event("well formed after all")
            assert len(D.load_lsun(root, image_size=4).train) >= 1
        else:
            assert_one_line_error(lambda: D.load_lsun(root, image_size=4), DataError)


@fuzz(20)
@given(
    st.one_of(
        st.tuples(st.just("value"), bad_image_files(), st.binary(min_size=1, max_size=32)),
        st.tuples(st.just("database"), st.binary(max_size=4096)),
    )
)
def test_fuzz_lsun_lmdb(case: Any) -> None:
    """An lmdb export holding a corrupt image under a fuzzed key, or a data.mdb that is no database."""
    lmdb = pytest.importorskip("lmdb")
    with scratch() as root:
        db = root / "bedroom_train_lmdb"
        if case[0] == "database":
            db.mkdir()
            (db / "data.mdb").write_bytes(case[1])
            assert_one_line_error(lambda: D.load_lsun(db, image_size=4), DataError)
            return
        _, (_, blob), key = case
        env = lmdb.open(str(db), map_size=1 << 22)
        with env.begin(write=True) as txn:
            for j in range(3):
                txn.put(f"good{j}".encode(), _ENCODED[".png"])
            txn.put(key, blob)
        env.close()
        if _decodable(blob):
            event("well formed after all")
            assert len(D.load_lsun(db, image_size=4).train) >= 1
        else:
            assert_one_line_error(lambda: D.load_lsun(db, image_size=4), DataError)


_bad_sizes = st.one_of(
    st.integers(max_value=0), st.floats(), st.booleans(), st.text(max_size=3), st.none(), st.just([64])
)


@fuzz(40)
@given(st.sampled_from(["image-folder", "celeba", "lsun"]), st.sampled_from(["image_size", "max_images"]), st.data())
def test_fuzz_image_arguments(name: str, arg: str, data: st.DataObject) -> None:
    value = data.draw(_bad_sizes.filter(lambda v: not (arg == "max_images" and v is None)))
    with scratch() as root:
        kwargs: dict[str, Any] = {"image_size": 8, arg: value}
        assert_one_line_error(lambda: D.load_dataset(name, root, **kwargs), DataError)


# --- config ----------------------------------------------------------------------------------------

FIELDS = {f.name: str(f.type) for f in dataclasses.fields(Config)}
_keys = sorted(FIELDS)


def _write_config(folder: Path, text: str) -> Path:
    p = folder / "c.yaml"
    p.write_text(text, encoding="utf-8")
    return p


@st.composite
def typo_keys(draw: st.DrawFn) -> str:
    """A valid key with one character dropped, doubled, replaced or two swapped; never valid."""
    key = draw(st.sampled_from(_keys))
    i = draw(st.integers(0, len(key) - 1))
    c = draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz_0123456789"))
    edit = draw(st.sampled_from(["drop", "double", "replace", "swap", "case"]))
    if edit == "drop":
        new = key[:i] + key[i + 1 :]
    elif edit == "double":
        new = key[:i] + key[i] + key[i:]
    elif edit == "replace":
        new = key[:i] + c + key[i + 1 :]
    elif edit == "swap" and i + 1 < len(key):
        new = key[:i] + key[i + 1] + key[i] + key[i + 2 :]
    else:
        new = key.upper()
    return new if new and new not in FIELDS else key + "_x"


@fuzz(100)
@given(
    st.one_of(typo_keys(), st.text(min_size=1, max_size=12).filter(lambda k: k.strip() and k.strip() not in FIELDS)),
    st.booleans(),
)
def test_fuzz_config_unknown_keys(key: str, as_override: bool) -> None:
    """An unknown key: a ConfigError naming it and suggesting the nearest valid key (when one is
    near) or listing them all."""
    with scratch() as d:
        if as_override and "=" not in key:
            call: Callable[[], Any] = lambda: load_config(None, [f"{key}=1"])  # noqa: E731
        else:
            path = _write_config(d, yaml.safe_dump({key: 1}))
            call = lambda: load_config(path)  # noqa: E731
        e = assert_one_line_error(call, ConfigError)
    msg = str(e)
    assert "unknown config key" in msg
    stripped = key.strip() if as_override and "=" not in key else key
    near = difflib.get_close_matches(stripped, _keys, n=1)
    if near:
        assert f"did you mean {near[0]!r}" in msg
    else:  # an alias or a shared word may still suggest a key; never the whole list of keys
        assert "did you mean" in msg or "the keys are the fields of steinebm.engine.config.Config" in msg
        assert ", ".join(_keys[:3]) not in msg


def test_typo_suggests_the_intended_key() -> None:
    for typo, meant in [("epsilom", "epsilon"), ("batchsize", "batch_size"), ("n_hiden", "n_hidden"), ("lrr", "lr")]:
        e = assert_one_line_error(lambda t=typo: load_config(None, [f"{t}=1"]), ConfigError)
        assert f"did you mean {meant!r}" in str(e)


_small_ints = st.integers(-(2**62), 2**62)
_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_lists = st.lists(st.integers(0, 3), max_size=3)
_dicts = st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(0, 3), min_size=1, max_size=2)


def _not_a_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return True
    return False


_WRONG = {
    "int": st.one_of(st.text(max_size=6), st.floats(), st.booleans(), _lists, _dicts, st.none()),
    "float": st.one_of(st.text(max_size=6).filter(_not_a_number), st.booleans(), _lists, _dicts, st.none()),
    "float | None": st.one_of(st.text(max_size=6).filter(_not_a_number), st.booleans(), _lists, _dicts),
    "str": st.one_of(_small_ints, _finite, st.booleans(), _lists, _dicts, st.none()),
    "str | None": st.one_of(_small_ints, _finite, st.booleans(), _lists, _dicts),
    "bool": st.one_of(_small_ints, st.text(max_size=6), _finite, st.none(), _lists),
    "dict[str, Any]": st.one_of(_small_ints, st.text(max_size=6), _lists, st.booleans(), st.none()),
    "Any": st.one_of(st.text(max_size=6).filter(lambda s: s != "median"), st.booleans(), _lists, _dicts, st.none()),
}


@fuzz(150)
@given(st.sampled_from([k for k in _keys if FIELDS[k] in _WRONG]), st.data())
def test_fuzz_config_wrong_types(key: str, data: st.DataObject) -> None:
    value = data.draw(_WRONG[FIELDS[key]])
    with scratch() as d:
        path = _write_config(d, yaml.safe_dump({key: value}))
        e = assert_one_line_error(lambda: load_config(path), ConfigError)
    assert key in str(e)


def _outside(lo: float, hi: float, lo_open: bool = False, hi_open: bool = True) -> st.SearchStrategy[float]:
    """Numbers outside [lo, hi) (or the interval the flags say), NaN and the infinities included."""
    below = st.floats(max_value=lo, exclude_max=not lo_open).filter(lambda v: v < lo or (lo_open and v <= lo))
    above = st.floats(min_value=hi, exclude_min=not hi_open)
    return st.one_of(below, above, st.just(math.nan))


_neg_int = st.integers(-(2**62), -1)
_OUT_OF_RANGE: dict[str, st.SearchStrategy[Any]] = {
    **{k: st.integers(-(2**62), 0) for k in ("n_hidden", "epochs", "batch_size", "cd_k", "log_every")},
    **{k: st.integers(-(2**62), 0) for k in ("code_dim", "noise_dim")},
    **{k: _neg_int for k in ("n_train", "eval_every", "checkpoint_every", "max_steps", "threads", "sm_probes")},
    **{k: _neg_int for k in ("seed", "width", "gen_width", "disc_width", "max_images")},
    **{k: _outside(0, math.inf, lo_open=True) for k in ("lr", "gen_lr", "langevin_step", "epsilon")},
    **{k: _outside(0, math.inf) for k in ("weight_decay", "langevin_noise", "gen_weight_decay")},
    **{k: _outside(0, 1) for k in ("beta1", "beta2", "gen_beta1", "gamma", "input_dropout")},
    "alpha": _outside(0, 1, hi_open=False),
    "gamma_adaptive": _outside(0, 1),
    "margin": st.sampled_from([math.nan, math.inf, -math.inf]),
    "image_size": st.integers(-(2**62), 2**62).filter(lambda v: v not in (32, 64)),
    "n_hidden_big": st.integers(4097, 2**62),
    "bandwidth": _outside(0, math.inf, lo_open=True) | st.integers(-(2**62), 0),
    "batch_size_one": st.just(1),
    "model": st.just("joint"),
    "conditional": st.just(True),
    "gen_kernel": st.just("feature"),
    "method_amortized": st.just("amortized-svgd"),
    "amp": st.just(True),  # with the default method, steincd
    "out_dir": st.text(" \t", max_size=3),
    "data_fingerprint": st.text(max_size=70).filter(lambda v: re.fullmatch("[0-9a-f]{64}", v) is None),
    "device": st.text(max_size=8).filter(lambda s: s not in ("cpu", "mps") and not s.startswith("cuda")),
    **{k: st.text(max_size=8) for k in ("method", "dataset", "kernel", "median_over", "log_term", "normalize")},
    **{k: st.text(max_size=8) for k in ("steincd_optimizer", "feature_repulsion", "feature_codes", "gamma_raise_when")},
}
_ALIASES = {"n_hidden_big": "n_hidden", "batch_size_one": "batch_size", "method_amortized": "method"}
_RANGE_CASES = sorted(k for k in _OUT_OF_RANGE if _ALIASES.get(k, k) in FIELDS)


def _override_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


@fuzz(150)
@given(st.sampled_from(_RANGE_CASES), st.booleans(), st.data())
def test_fuzz_config_out_of_range(case: str, as_override: bool, data: st.DataObject) -> None:
    key = _ALIASES.get(case, case)
    # a random text must not hit one of the field's valid values
    value = data.draw(_OUT_OF_RANGE[case].filter(lambda v: v not in CHOICES.get(case, ())))
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    with scratch() as d:
        if as_override and numeric:  # strings stay strings through the file, not always as overrides
            call: Callable[[], Any] = lambda: load_config(None, [f"{key}={_override_text(value)}"])  # noqa: E731
        else:
            path = _write_config(d, yaml.safe_dump({key: value}))
            call = lambda: load_config(path)  # noqa: E731
        e = assert_one_line_error(call, ConfigError)
    assert "invalid" in str(e)


_GOOD_TEXT = "method: steincd\nlr: 0.001\nseed: 3\nextra:\n  note: x\n"


@st.composite
def malformed_yaml(draw: st.DrawFn) -> tuple[str, bool]:
    """(text, whether it can never be a valid config)."""
    kind = draw(
        st.sampled_from(
            [
                "not-a-mapping",
                "unclosed",
                "indent",
                "tab",
                "alias",
                "two-documents",
                "quote",
                "tag",
                "control",
                "insert",
            ]
        )
    )
    key = draw(st.sampled_from(_keys))
    if kind == "not-a-mapping":
        value = draw(st.one_of(st.lists(st.integers(), min_size=0, max_size=3), st.text(max_size=8), _small_ints))
        return yaml.safe_dump(value), True
    if kind == "unclosed":
        return draw(st.sampled_from(["{", "[", f"{key}: [1, 2", f"{key}: {{a: 1", f"{{{key}: 1"])), True
    if kind == "indent":
        return f"{key}: 1\n  {draw(st.sampled_from(_keys))}: 2\n", True
    if kind == "tab":
        return f"extra:\n\t{key}: 1\n", True
    if kind == "alias":
        return f"{key}: *{draw(st.from_regex(r'[a-z]{1,6}', fullmatch=True))}\n", True
    if kind == "two-documents":
        return f"{key}: 1\n---\n{key}: 2\n", True
    if kind == "quote":
        return f"{key}: '{draw(st.text('abc xyz:', max_size=6))}\n", True
    if kind == "tag":
        return f"{key}: !!python/object/apply:os.system ['touch MARKER']\n", True
    if kind == "control":
        c = draw(st.sampled_from([chr(i) for i in [*range(1, 9), 11, 12, *range(14, 32), 127]]))
        return f"{key}: 1\n{c}\n", True
    pos = draw(st.integers(0, len(_GOOD_TEXT)))
    junk = draw(st.sampled_from(["[", "]", "{", "}", ": :", "\t", "'", '"', "&", "*", "!", "%", "@", "`", "- a\n"]))
    return _GOOD_TEXT[:pos] + junk + _GOOD_TEXT[pos:], False


@fuzz(120)
@given(malformed_yaml())
def test_fuzz_config_malformed_yaml(case: tuple[str, bool]) -> None:
    """Malformed YAML or a document that is no mapping: a ConfigError; a mutation that happens to
    stay a valid config may load. A python tag never runs its code."""
    text, must_fail = case
    with scratch() as d:
        text = text.replace("MARKER", str(d / "pwned"))
        path = _write_config(d, text)
        if must_fail:
            assert_one_line_error(lambda: load_config(path), ConfigError)
        else:
            try:
                assert isinstance(load_config(path), Config)
                event("well formed after all")
            except ConfigError as e:
                assert "\n" not in str(e)
        assert not (d / "pwned").exists()


_numberish = st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{0,5})?(e-?[0-9]{1,3})?", fullmatch=True)


@fuzz(60)
@given(st.sampled_from(_keys), st.one_of(st.text(max_size=12), _numberish))
def test_fuzz_config_override_text(key: str, raw: str) -> None:
    """Any text after key= either gives a valid config or a one-line ConfigError."""
    try:
        assert isinstance(load_config(None, [f"{key}={raw}"]), Config)
        event("well formed after all")
    except ConfigError as e:
        assert "\n" not in str(e)


# Inputs that once escaped the config loader as other exceptions; each must now be a one-line ConfigError.
_CONFIG_BUGS = [
    pytest.param("lr: " + "9" * 400 + "\n", id="int-too-large-for-a-float-field"),
    pytest.param("bandwidth: " + "9" * 400 + "\n", id="int-too-large-for-bandwidth"),
    pytest.param("extra: " + "[" * 2000 + "]" * 2000 + "\n", id="deeply-nested-yaml"),
    pytest.param(b"lr: 0.1 \xff\n", id="not-utf-8"),
    pytest.param("extra: &a {x: *a}\n", id="self-referential-extra"),
    pytest.param("threads: 1099511627776\n", id="absurd-thread-count"),
]


@pytest.mark.parametrize("text", _CONFIG_BUGS)
def test_config_inputs_that_once_escaped_the_loader(tmp_path: Path, text: str | bytes) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "\n" not in str(e.value)


def test_cli_train_with_an_overlong_key_value_argument_is_a_config_error() -> None:
    code, err = _cli(["train", "out_dir=" + "x" * 300, "lr=" + "9" * 400])
    assert code == 2 and err.count("\n") == 1


# --- the command line ------------------------------------------------------------------------------


def _cli(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = cli_main(argv)
    return code, err.getvalue()


def _assert_exit_2(argv: list[str]) -> None:
    code, err = _cli(argv)
    assert code == 2, err
    assert err.startswith("steinebm: error: ") and err.count("\n") == 1, repr(err)


@fuzz(30)
@given(
    st.one_of(
        typo_keys().map(lambda k: yaml.safe_dump({k: 1})),
        st.sampled_from([k for k in _keys if FIELDS[k] in _WRONG and k not in ("out_dir", "data_dir")]).flatmap(
            lambda k: _WRONG[FIELDS[k]].map(lambda v: yaml.safe_dump({k: v}))
        ),
        malformed_yaml().filter(lambda c: c[1]).map(lambda c: c[0]),
    )
)
def test_fuzz_cli_bad_configs_exit_2(text: str) -> None:
    with scratch() as d:
        text = text.replace("MARKER", str(d / "pwned"))
        path = _write_config(d, text)
        _assert_exit_2(["train", str(path), f"out_dir={d / 'run'}", "--data-dir", str(d / "nodata")])
        assert not (d / "run").exists() and not (d / "pwned").exists()


@fuzz(10)
@given(st.sampled_from(["image-folder", "celeba", "lsun", "cifar10", "mnist"]), bad_image_files())
def test_fuzz_cli_bad_datasets_exit_2(cifar_template: Path, dataset: str, bad: tuple[str, bytes]) -> None:
    ext, blob = bad
    with scratch() as d:
        data = d / "data"
        if dataset == "cifar10":
            shutil.copytree(cifar_template, data / "cifar-10-batches-py")  # synthetic: fails the md5 check
            (data / "cifar-10-batches-py" / "test_batch").write_bytes(blob)
        elif dataset == "mnist":
            for name in DI.MNIST_FILES:
                (data / name).parent.mkdir(exist_ok=True)
                (data / name).write_bytes(blob)
        else:
            folder = data / "img_align_celeba" if dataset == "celeba" else data
            for j in range(3):
                _save(folder / f"{j:06d}.png", _solid(108, 108, 10 * j))
            (folder / f"bad{ext}").write_bytes(blob)
            if _decodable(blob):
                (folder / "zzz.png").write_bytes(b"")  # an unreadable one after all
        argv = ["train", f"dataset={dataset}", "image_size=32", f"out_dir={d / 'run'}", "--data-dir", str(data)]
        _assert_exit_2(argv)
