import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from steinebm import data as D
from steinebm.errors import DataError

SUBSET = Path(D.__file__).parent / "assets" / "mnist-subset"
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
        D._read_mnist_folder(folder, D.SUBSET_FILES, 1000, "x")


def test_download_checks_md5(tmp_path, monkeypatch):
    # a local "mirror" served over file://, once intact and once corrupt
    mirror = tmp_path / "mirror"
    shutil.copytree(SUBSET, mirror)
    monkeypatch.setattr(D, "MNIST_MIRRORS", (mirror.as_uri() + "/",))
    dest = tmp_path / "cache"
    D._download(D.SUBSET_FILES, dest)
    for name, md5 in D.SUBSET_FILES.items():
        assert hashlib.md5((dest / name).read_bytes()).hexdigest() == md5
    bad = tmp_path / "badmirror"
    shutil.copytree(SUBSET, bad)
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    monkeypatch.setattr(D, "MNIST_MIRRORS", (bad.as_uri() + "/",))
    dest2 = tmp_path / "cache2"
    with pytest.raises(DataError, match="md5"):
        D._download(D.SUBSET_FILES, dest2)
    assert not (dest2 / "t10k-labels-idx1-ubyte.gz").exists()  # nothing unchecked is kept


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        D.load_dataset("cifar100")


def test_mean_pairwise_distance_against_a_loop():
    import itertools

    from steinebm.metrics import mean_pairwise_distance

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
    from steinebm.metrics import near_duplicate_fraction, nearest_neighbour_distance

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
    from steinebm.metrics import mean_pairwise_distance, near_duplicate_fraction, nearest_neighbour_distance

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
