import gzip
import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from steinebm import data as D
from steinebm.data import fetch as DF
from steinebm.data import idx as DI
from steinebm.errors import DataError

SUBSET = Path(D.__file__).parents[1] / "assets" / "mnist-subset"
TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a.gz", 3), arr)


@pytest.mark.parametrize(
    "payload, msg",
    [
        (b"not gzip at all", "gzip"),
        (gzip.compress(b"\x00\x00"), "truncated"),
        (gzip.compress(bytes([0, 0, 0x09, 3]) + struct.pack(">III", 1, 2, 2) + b"\0" * 4), "magic"),
        (gzip.compress(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + b"\0" * 5), "magic"),  # wrong ndim
        (gzip.compress(bytes([0, 0, 0x08, 3]) + struct.pack(">II", 1, 2)), "truncated"),
        (gzip.compress(bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2, 2, 2) + b"\0" * 7), "header says"),
        (gzip.compress(bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2, 2, 2) + b"\0" * 9), "header says"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path, payload, msg):
    p = tmp_path / "bad.gz"
    p.write_bytes(payload)
    with pytest.raises(DataError, match=msg):
        D.read_idx(p, 3)


def test_embedded_subset_shapes_and_range():
    ds = D.load_dataset("mnist-embedded")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5000, 1000, 1000)
    assert ds.dim == 784 and ds.image_shape == (1, 28, 28)
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == torch.float32
        assert float(split.x.min()) == 0.0 and float(split.x.max()) == 1.0
    # train + validation is a permutation of the 6,000 shipped training images
    raw = D.read_idx(SUBSET / "train-images-idx3-ubyte.gz", 3).reshape(6000, -1).astype(np.float64).sum(1)
    got = torch.cat([ds.train.x, ds.val.x]).double().sum(1).mul(255).round().numpy()
    np.testing.assert_array_equal(np.sort(got), np.sort(raw))


def test_embedded_subset_is_the_head_of_the_original_files(full_mnist_dir):
    for name, n in [("train-images-idx3-ubyte.gz", 6000), ("t10k-images-idx3-ubyte.gz", 1000)]:
        full = D.read_idx(full_mnist_dir / name, 3)
        sub = D.read_idx(SUBSET / name, 3)
        np.testing.assert_array_equal(sub, full[:n])
    for name, n in [("train-labels-idx1-ubyte.gz", 6000), ("t10k-labels-idx1-ubyte.gz", 1000)]:
        np.testing.assert_array_equal(D.read_idx(SUBSET / name, 1), D.read_idx(full_mnist_dir / name, 1)[:n])


def test_full_mnist_splits_and_histograms(full_mnist_dir):
    ds = D.load_mnist(full_mnist_dir)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50_000, 10_000, 10_000)
    hist = torch.bincount(torch.cat([ds.train.y, ds.val.y]), minlength=10).tolist()
    assert hist == TRAIN_HIST
    assert torch.bincount(ds.test.y, minlength=10).tolist() == TEST_HIST
    assert 0.0 <= float(ds.train.x.min()) and float(ds.train.x.max()) == 1.0
    # pixel / 255 exactly: a raw byte read independently of the loader
    raw = gzip.decompress((full_mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    first = np.frombuffer(raw[16 : 16 + 784], dtype=np.uint8).astype(np.float32) / 255.0
    np.testing.assert_array_equal(ds.test.x[0].numpy(), first)
    # the split is seeded: a second load gives the same validation set
    again = D.load_mnist(full_mnist_dir)
    assert torch.equal(again.val.y, ds.val.y)


def test_missing_mnist_says_where_to_put_files(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        D.load_mnist(tmp_path / "nowhere")


def test_corrupt_file_fails_md5(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(SUBSET, folder)
    p = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="md5"):
        DI._read_mnist_folder(folder, DI.SUBSET_FILES, 1000, "x")


def test_download_checks_md5(tmp_path, monkeypatch):
    # a local "mirror" served over file://, once intact and once corrupt
    mirror = tmp_path / "mirror"
    shutil.copytree(SUBSET, mirror)
    monkeypatch.setattr(DI, "MNIST_MIRRORS", (mirror.as_uri() + "/",))
    dest = tmp_path / "cache"
    DF._download(DI.SUBSET_FILES, dest, DI.MNIST_MIRRORS)
    for name, md5 in DI.SUBSET_FILES.items():
        assert hashlib.md5((dest / name).read_bytes()).hexdigest() == md5
    bad = tmp_path / "badmirror"
    shutil.copytree(SUBSET, bad)
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    monkeypatch.setattr(DI, "MNIST_MIRRORS", (bad.as_uri() + "/",))
    dest2 = tmp_path / "cache2"
    with pytest.raises(DataError, match="md5"):
        DF._download(DI.SUBSET_FILES, dest2, DI.MNIST_MIRRORS)
    assert not (dest2 / "t10k-labels-idx1-ubyte.gz").exists()  # nothing unchecked is kept


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        D.load_dataset("cifar100")


def test_mean_pairwise_distance_against_a_loop():
    import itertools

    from steinebm.evaluation.likelihood import mean_pairwise_distance

    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 1, 3, 3, generator=g)
    flat = x.reshape(7, -1).double().numpy()
    pairs = [np.linalg.norm(flat[i] - flat[j]) for i, j in itertools.combinations(range(7), 2)]
    assert mean_pairwise_distance(x) == pytest.approx(np.mean(pairs), rel=1e-12)
    assert mean_pairwise_distance(x.repeat(3, 1, 1, 1)[:, :, :, :] * 0 + x[0]) == pytest.approx(0.0, abs=1e-12)


def _nn_distances_by_loop(x: torch.Tensor) -> list[float]:
    flat = x.reshape(x.shape[0], -1).double().numpy()
    z = [(v - v.mean()) / np.linalg.norm(v - v.mean()) for v in flat]
    return [min(np.linalg.norm(z[i] - z[j]) for j in range(len(z)) if j != i) for i in range(len(z))]


def test_nearest_neighbour_distance_against_a_loop():
    from steinebm.evaluation.likelihood import near_duplicate_fraction, nearest_neighbour_distance

    x = torch.rand(9, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    nn_d = _nn_distances_by_loop(x)
    assert nearest_neighbour_distance(x) == pytest.approx(np.mean(nn_d), rel=1e-12)
    for t in (0.5, 1.0, 1.2):
        assert near_duplicate_fraction(x, threshold=t) == pytest.approx(np.mean([d < t for d in nn_d]), abs=1e-12)
    # only the first max_n images count
    assert nearest_neighbour_distance(x, max_n=4) == pytest.approx(np.mean(_nn_distances_by_loop(x[:4])), rel=1e-12)


def test_near_duplicates_ignore_brightness_and_see_a_collapse():
    """Copies of two pictures at many brightness/contrast levels are all near-duplicates, although
    their plain pixel distances are large; distinct random pictures are not."""
    from steinebm.evaluation.likelihood import (
        mean_pairwise_distance,
        near_duplicate_fraction,
        nearest_neighbour_distance,
    )

    g = torch.Generator().manual_seed(2)
    protos = torch.rand(2, 1, 8, 8, generator=g)
    scales = torch.linspace(0.2, 1.0, 10).view(10, 1, 1, 1)
    collapsed = torch.cat([0.05 + scales * protos[0], scales * protos[1]])  # 20 images, 2 shapes
    distinct = torch.rand(20, 1, 8, 8, generator=g)
    assert nearest_neighbour_distance(collapsed) == pytest.approx(0.0, abs=1e-6)
    assert near_duplicate_fraction(collapsed) == 1.0
    assert near_duplicate_fraction(distinct) == 0.0
    # plain pixel distances stay large for the collapsed set: they count brightness
    assert mean_pairwise_distance(collapsed) > 0.5 * mean_pairwise_distance(distinct)
    assert nearest_neighbour_distance(distinct) > 0.5


# --- Fashion-MNIST, any IDX folder, fingerprints ---------------------------------------------------

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist package
NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """IDX bytes written by hand: magic 0 0 type ndim, big-endian dims, then the values."""
    return bytes([0, 0, type_code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def _images(n: int, h: int = 28, w: int = 28, start: int = 0) -> np.ndarray:
    """n distinct images: image i is filled with (start + i) % 256, its top-left pixel i // 256."""
    a = np.empty((n, h, w), np.uint8)
    for i in range(n):
        a[i] = (start + i) % 256
        a[i, 0, 0] = (start + i) // 256
    return a


def _tiny_set(folder: Path, n_train: int = 12, n_test: int = 5, start: int = 0) -> dict[str, np.ndarray]:
    """Four small IDX files under MNIST's names; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        NAMES[0]: _images(n_train, start=start),
        NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        NAMES[2]: _images(n_test, start=start + 100),
        NAMES[3]: (np.arange(n_test) * 3 % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        _write_idx(folder / name, arr)
    return arrays


def _md5_of(folder: Path) -> dict[str, str]:
    return {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in NAMES}


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch) -> tuple[Path, dict[str, np.ndarray]]:
    """Small files that the loader takes for Fashion-MNIST's: their md5s stand in for the published
    ones (the real files are 30 MB and need not be installed), with a 2-image validation split."""
    folder = tmp_path / "data" / "fashion-mnist"
    arrays = _tiny_set(folder)
    for name, md5 in _md5_of(folder).items():
        monkeypatch.setitem(DI.FASHION_MNIST_FILES, name, md5)
        monkeypatch.setitem(
            DI.FASHION_MNIST_CONTENT, name, hashlib.md5(gzip.decompress((folder / name).read_bytes())).hexdigest()
        )
    monkeypatch.setattr(DI, "MNIST_N_VAL", 2)
    return folder, arrays


def test_fashion_mnist_is_a_dataset(fake_fashion):
    folder, arrays = fake_fashion
    ds = D.load_dataset("fashion-mnist", folder.parent)  # found in the fashion-mnist/ sub-folder
    assert ds.name == "fashion-mnist" and ds.source == str(folder) and ds.image_shape == (1, 28, 28)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10, 2, 5)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
    # test images in file order, pixel / 255; each training image keeps its own label
    want = arrays[NAMES[2]].reshape(5, -1).astype(np.float64) / 255.0
    np.testing.assert_allclose(ds.test.x.numpy(), want, rtol=0, atol=1e-7)
    assert ds.test.y.tolist() == arrays[NAMES[3]].tolist()
    for x, y in zip(torch.cat([ds.train.x, ds.val.x]), torch.cat([ds.train.y, ds.val.y])):
        i = round(float(x[1]) * 255)  # image i is filled with i
        assert int(y) == i % 10
    # the split is MNIST's rule: the last n_val of the seed-42 permutation
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(42))
    assert [round(float(v[1]) * 255) for v in ds.val.x] == perm[10:].tolist()


def test_fashion_mnist_gzipped_again_passes_by_its_contents(fake_fashion):
    """Debian's package holds the published data under another gzip header: other file md5s."""
    folder, arrays = fake_fashion
    p = folder / NAMES[0]
    p.write_bytes(gzip.compress(_idx_bytes(arrays[NAMES[0]]), mtime=1234567))
    assert hashlib.md5(p.read_bytes()).hexdigest() != DI.FASHION_MNIST_FILES[NAMES[0]]
    assert len(D.load_fashion_mnist(folder).train) == 10
    # other contents under the same name: refused, and told to use dataset=idx
    p.write_bytes(gzip.compress(_idx_bytes(_images(12, start=7)), mtime=0))
    with pytest.raises(DataError, match="valid IDX file .*dataset=idx") as e:
        D.load_fashion_mnist(folder)
    assert "\n" not in str(e.value)


def test_mnist_refuses_fashion_files_and_says_what_they_are(fake_fashion, tmp_path):
    folder, _ = fake_fashion
    with pytest.raises(DataError) as e:
        D.load_mnist(folder, download=False)
    msg = str(e.value)
    assert "Fashion-MNIST's train-images-idx3-ubyte.gz, not MNIST's" in msg and "dataset=fashion-mnist" in msg
    assert "corrupt" not in msg and "\n" not in msg
    # a valid IDX file of unknown data: not "corrupt" either, but dataset=idx
    other = tmp_path / "other"
    _tiny_set(other, start=50)
    with pytest.raises(DataError, match=r"valid IDX file \(12 x 28 x 28\) but not the original MNIST file") as e:
        D.load_mnist(other, download=False)
    assert "dataset=idx" in str(e.value)
    # a damaged file is still called damaged
    (other / NAMES[0]).write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="md5 .*corrupt or not the original"):
        D.load_mnist(other, download=False)


def test_fashion_mnist_offline_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as e:
        D.load_dataset("fashion-mnist", tmp_path / "nowhere")
    assert "Fashion-MNIST not found" in str(e.value) and "/usr/share/datasets/fashion-mnist" in str(e.value)
    assert not (tmp_path / "nowhere").exists()


def test_fashion_download_writes_only_checked_files(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    _tiny_set(mirror)
    for name, md5 in _md5_of(mirror).items():
        monkeypatch.setitem(DI.FASHION_MNIST_FILES, name, md5)
    monkeypatch.setattr(DI, "FASHION_MNIST_MIRRORS", (mirror.as_uri() + "/",))
    monkeypatch.setattr(DI, "MNIST_N_VAL", 2)
    monkeypatch.delenv("STEINEBM_OFFLINE")
    ds = D.load_fashion_mnist(tmp_path / "cache")
    assert ds.source == str(tmp_path / "cache" / "fashion-mnist") and len(ds.test) == 5
    (mirror / NAMES[1]).write_bytes(b"tampered")
    with pytest.raises(DataError, match="Fashion-MNIST file train-labels-idx1-ubyte.gz is missing"):
        D.load_fashion_mnist(tmp_path / "cache2")
    # the first file was fetched and checked; the tampered one never appears
    assert sorted(p.name for p in (tmp_path / "cache2" / "fashion-mnist").iterdir()) == [NAMES[0]]


@pytest.mark.skipif(
    not FASHION_SYSTEM.is_dir(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
)
def test_real_fashion_mnist_checksums_and_counts():
    """The published md5s, checked against Debian's copy: its gzip header lacks the file name and
    has another time stamp; putting back the name and the original time stamps (2017-08-31) gives
    byte for byte the published files."""
    mtimes = {NAMES[0]: 1504176606, NAMES[1]: 1504176606, NAMES[2]: 1504176627, NAMES[3]: 1504176627}
    for name in NAMES:
        blob = (FASHION_SYSTEM / name).read_bytes()
        assert blob[:4] == b"\x1f\x8b\x08\x00"  # deflate, no flags: no file name stored
        original = (
            b"\x1f\x8b\x08\x08" + struct.pack("<I", mtimes[name]) + b"\x00\x03" + name[:-3].encode() + b"\0" + blob[10:]
        )
        assert hashlib.md5(original).hexdigest() == DI.FASHION_MNIST_FILES[name]
        assert hashlib.md5(gzip.decompress(blob)).hexdigest() == DI.FASHION_MNIST_CONTENT[name]
    ds = D.load_dataset("fashion-mnist", FASHION_SYSTEM)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50_000, 10_000, 10_000)
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images of each kind
    assert torch.bincount(torch.cat([ds.train.y, ds.val.y]), minlength=10).tolist() == [6000] * 10
    assert torch.bincount(ds.test.y, minlength=10).tolist() == [1000] * 10
    raw = gzip.decompress((FASHION_SYSTEM / NAMES[2]).read_bytes())
    first = np.frombuffer(raw[16 : 16 + 784], dtype=np.uint8).astype(np.float32) / 255.0
    np.testing.assert_array_equal(ds.test.x[0].numpy(), first)


def test_idx_folder_with_other_names_sizes_and_no_gzip(tmp_path):
    """KMNIST-like names, 5 x 7 images, uncompressed files: read as they are, split as MNIST."""
    xtr, xte = _images(30, 5, 7), _images(4, 5, 7, start=200)
    ytr, yte = (np.arange(30) * 7 % 49).astype(np.uint8), np.array([48, 0, 1, 2], np.uint8)
    for name, arr in [
        ("k49-train-imgs-idx3-ubyte", xtr),
        ("k49-train-labels-idx1-ubyte", ytr),
        ("k49-test-imgs-idx3-ubyte", xte),
        ("k49-test-labels-idx1-ubyte.gz", yte),
    ]:
        blob = _idx_bytes(arr)
        (tmp_path / name).write_bytes(gzip.compress(blob) if name.endswith(".gz") else blob)
    (tmp_path / "README.txt").write_text("not an IDX file")
    ds = D.load_dataset("idx", tmp_path)
    assert ds.name == "idx" and ds.image_shape == (1, 5, 7) and ds.dim == 35
    assert (len(ds.train), len(ds.val), len(ds.test)) == (25, 5, 4)  # round(30 / 6) = 5 validation images
    np.testing.assert_allclose(ds.test.x.numpy(), xte.reshape(4, -1) / 255.0, rtol=0, atol=1e-7)
    assert ds.test.y.tolist() == [48, 0, 1, 2]
    for x, y in zip(torch.cat([ds.train.x, ds.val.x]), torch.cat([ds.train.y, ds.val.y])):
        i = round(float(x[1]) * 255)
        assert int(y) == i * 7 % 49
    assert sorted(round(float(x[1]) * 255) for x in torch.cat([ds.train.x, ds.val.x])) == list(range(30))


def test_idx_without_test_file_or_labels(tmp_path):
    (tmp_path / "mine-train-idx3").write_bytes(_idx_bytes(_images(40, 3, 3)))
    ds = D.load_idx(tmp_path)
    # 5% each for validation and test: 2 + 2 of 40; every image in exactly one split; labels 0
    assert (len(ds.train), len(ds.val), len(ds.test)) == (36, 2, 2)
    seen = sorted(round(float(x[1]) * 255) for s in (ds.train, ds.val, ds.test) for x in s.x)
    assert seen == list(range(40))
    assert all(int(s.y.abs().sum()) == 0 for s in (ds.train, ds.val, ds.test))
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(42)).tolist()
    assert [round(float(x[1]) * 255) for x in ds.test.x] == perm[36:38]
    assert [round(float(x[1]) * 255) for x in ds.val.x] == perm[38:]


def test_idx_reads_mnist_files_as_mnist_does():
    """MNIST's own files read as dataset=idx: the same tensors, so the same fingerprint."""
    a, b = D.load_idx(SUBSET), D.load_dataset("mnist-embedded")
    for s, t in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(s.x, t.x) and torch.equal(s.y, t.y)
    assert D.fingerprint(a) == D.fingerprint(b)


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return folder


TR, TRL = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TE, TEL = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
GOOD = {
    TR: _idx_bytes(_images(6, 4, 4)),
    TRL: _idx_bytes(np.zeros(6, np.uint8)),
    TE: _idx_bytes(_images(2, 4, 4)),
    TEL: _idx_bytes(np.zeros(2, np.uint8)),
}


@pytest.mark.parametrize(
    "change, needle",
    [
        ({TR: None}, "holds no IDX training images"),
        ({TR: None, TE: None, TEL: None, TRL: None, "notes-idx.txt": b"x"}, "holds no IDX training images"),
        ({TRL: _idx_bytes(np.zeros(5, np.uint8))}, "holds 5 labels for the 6 images"),
        ({TE: _idx_bytes(_images(2, 4, 5))}, "are 4x5, the training images 4x4"),
        ({TEL: None}, "none for the test images"),
        ({TE: None}, "test labels but no test images"),
        ({TR: _idx_bytes(np.zeros((6, 16), np.uint8))}, "2-dimensional array, not a 3-dimensional"),
        ({TR: _idx_bytes(np.zeros((6, 4, 4), ">f4"), 0x0D)}, "float32 values, not unsigned bytes"),
        ({TR: _idx_bytes(_images(6, 4, 4))[:-1]}, "header says"),
        ({TR: _idx_bytes(np.zeros((0, 4, 4), np.uint8))}, "holds 0 images"),
        ({"train-images-idx3-ubyte.gz": gzip.compress(GOOD[TR])}, "holds 2 train images files"),
        ({"images-idx3-ubyte": GOOD[TR]}, "must say either train or test"),
        ({"train-idx1-idx3": GOOD[TR]}, "both idx1 (labels) and idx3"),
        ({TR + ".gz": b"not gzip", TR: None}, "not a readable gzip file"),
    ],
)
def test_idx_folder_that_does_not_hold_what_is_needed(tmp_path, change, needle):
    files = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    folder = _write(tmp_path / "data", files)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(DataError) as e:
        D.load_dataset("idx", folder)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


def test_idx_folder_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist: point --data-dir at a folder of IDX files"):
        D.load_dataset("idx", tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_fingerprint_is_sha256_of_the_tensors_and_sees_every_change():
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> D.Split:
        return D.Split(torch.rand(n, 4, generator=g), torch.randint(0, 10, (n,), generator=g))

    ds = D.Dataset("a", split(5), split(2), split(3), (1, 2, 2), "memory")
    # by hand: a JSON header of shapes and dtypes, then each split's x (float32) and y (int64) bytes
    head = {"image_shape": [1, 2, 2], "splits": [[[n, 4], "torch.float32", [n], "torch.int64"] for n in (5, 2, 3)]}
    h = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    for s in (ds.train, ds.val, ds.test):
        h.update(s.x.numpy().astype("<f4").tobytes())
        h.update(s.y.numpy().astype("<i8").tobytes())
    fp = D.fingerprint(ds)
    assert fp == h.hexdigest() and len(fp) == 64
    # the name and the folder do not count; a pixel, a label, the split or the shape do
    assert D.fingerprint(D.Dataset("b", ds.train, ds.val, ds.test, (1, 2, 2), "elsewhere")) == fp
    changed = [
        D.Dataset("a", D.Split(ds.train.x + torch.eye(5, 4) * 1e-7, ds.train.y), ds.val, ds.test, (1, 2, 2), ""),
        D.Dataset("a", D.Split(ds.train.x, (ds.train.y + 1) % 10), ds.val, ds.test, (1, 2, 2), ""),
        D.Dataset("a", ds.val, ds.train, ds.test, (1, 2, 2), ""),
        D.Dataset("a", ds.train, ds.val, ds.test, (1, 4, 1), ""),
    ]
    assert len({fp, *(D.fingerprint(c) for c in changed)}) == 5


def test_a_download_that_cannot_be_written_is_not_retried_elsewhere(tmp_path, monkeypatch):
    """A mirror that serves the file is not the fault when the disk refuses it: one line saying
    what to do, and no other mirror is asked (each would fail the same way)."""
    import urllib.request

    mirror = tmp_path / "mirror"
    shutil.copytree(SUBSET, mirror)
    asked = []
    real = urllib.request.urlopen

    def counting(url, *a, **k):
        asked.append(url)
        return real(url, *a, **k)

    monkeypatch.setattr(urllib.request, "urlopen", counting)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    mirrors = (mirror.as_uri() + "/", mirror.as_uri() + "/second/")
    with pytest.raises(DataError) as failed:
        DF._download(DI.SUBSET_FILES, blocker / "mnist", mirrors)
    # the disk's own line, not "could not be downloaded" after trying every mirror
    assert str(failed.value).startswith("cannot write ") and "choose another --data-dir" in str(failed.value)
    assert "\n" not in str(failed.value) and asked == []  # not even a temporary file could be made
    # a mirror that fails is followed by the next, which serves the file
    dest = tmp_path / "cache"
    DF._download(DI.SUBSET_FILES, dest, (mirror.as_uri() + "/missing/", mirror.as_uri() + "/"))
    assert sorted(p.name for p in dest.iterdir()) == sorted(DI.SUBSET_FILES)
    assert len(asked) == 2 * len(DI.SUBSET_FILES)
