"""Natural-image datasets: CIFAR-10 (pickle batches), CelebA, LSUN (lmdb or folder), image folders."""

import hashlib
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from steinebm import data as D
from steinebm.data import base as DB
from steinebm.data import cifar as DC
from steinebm.data import fetch as DF
from steinebm.data import images as DM
from steinebm.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STEINEBM_TEST_DATA", ROOT.parent / "shared" / "data"))
FULL_CIFAR = SHARED / "cifar10" / "cifar-10-batches-py"
CELEBA_SAMPLE = SHARED / "celeba-sample"
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def full_cifar_dir() -> Path:
    if not all((FULL_CIFAR / n).exists() for n in DC.CIFAR10_FILES):
        pytest.skip(f"full CIFAR-10 not found at {FULL_CIFAR} (set STEINEBM_TEST_DATA to the folder holding cifar10/)")
    return FULL_CIFAR


# --- CIFAR-10 ------------------------------------------------------------------------------------


def _pixel(k: int, c: int, h: int, w: int, offset: int) -> int:
    """A known byte for pixel (c, h, w) of image k; each channel lives in its own value range."""
    return c * 80 + (offset + 3 * k + 5 * h + 7 * w) % 80


def _cifar_images(n: int, offset: int) -> np.ndarray:
    k, c, h, w = np.meshgrid(np.arange(n), np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return (c * 80 + (offset + 3 * k + 5 * h + 7 * w) % 80).astype(np.uint8).reshape(n, 3072)


def _write_batch(path: Path, x: np.ndarray, labels: list[int]) -> None:
    d = {b"batch_label": b"test", b"labels": labels, b"data": x, b"filenames": [b"f"] * len(labels)}
    path.write_bytes(pickle.dumps(d, protocol=2))


def _write_cifar(folder: Path, n_per_batch: int = 4, n_test: int = 6) -> dict[str, str]:
    """A tiny CIFAR-10 folder in the original format; returns its md5s (as CIFAR10_FILES)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        x = _cifar_images(n_per_batch, offset=10 * i)
        _write_batch(folder / f"data_batch_{i}", x, [(i + j) % 10 for j in range(n_per_batch)])
    _write_batch(folder / "test_batch", _cifar_images(n_test, offset=0), [j % 10 for j in range(n_test)])
    meta = {b"num_cases_per_batch": n_per_batch, b"label_names": [s.encode() for s in CIFAR_NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in DC.CIFAR10_FILES}


def test_cifar_pixels_round_trip_in_chw_order(tmp_path):
    md5s = _write_cifar(tmp_path / "c")
    ds = DC._read_cifar_folder(tmp_path / "c", md5s, n_val=5)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 6)
    assert ds.image_shape == (3, 32, 32) and ds.dim == 3072 and ds.classes == tuple(CIFAR_NAMES)
    assert ds.train.x.dtype == torch.float32 and ds.test.y.dtype == torch.int64
    # test images keep their order: pixel (c, h, w) of image k is exactly the byte written / 255
    img = ds.test.x.reshape(6, 3, 32, 32)
    for k, c, h, w in [(0, 0, 0, 0), (1, 1, 2, 3), (5, 2, 31, 0), (3, 2, 0, 31), (4, 0, 17, 9)]:
        assert img[k, c, h, w].item() == np.float32(_pixel(k, c, h, w, 0)) / np.float32(255)
    # channel c holds values in [80c, 80c + 80): CHW, not HWC
    for c in range(3):
        assert 80 * c / 255 <= float(img[:, c].min()) and float(img[:, c].max()) < (80 * c + 80) / 255
    np.testing.assert_array_equal(ds.test.x.numpy(), _cifar_images(6, 0).astype(np.float32) / np.float32(255))
    assert ds.test.y.tolist() == [0, 1, 2, 3, 4, 5]
    # train / validation: the seeded split of the 20 training images in batch order
    all_x = np.concatenate([_cifar_images(4, 10 * i) for i in range(1, 6)]).astype(np.float32) / np.float32(255)
    all_y = np.array([(i + j) % 10 for i in range(1, 6) for j in range(4)])
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(42)).numpy()
    np.testing.assert_array_equal(ds.train.x.numpy(), all_x[perm[:15]])
    np.testing.assert_array_equal(ds.val.x.numpy(), all_x[perm[15:]])
    assert ds.train.y.tolist() == all_y[perm[:15]].tolist() and ds.val.y.tolist() == all_y[perm[15:]].tolist()


def test_read_cifar_batch_direct(tmp_path):
    x = _cifar_images(3, 7)
    _write_batch(tmp_path / "b", x, [9, 0, 4])
    got, y = D.read_cifar_batch(tmp_path / "b")
    np.testing.assert_array_equal(got, x)
    assert got.dtype == np.uint8 and y.dtype == np.int64 and y.tolist() == [9, 0, 4]


def test_cifar_md5_mismatch(tmp_path):
    md5s = _write_cifar(tmp_path / "c")
    p = tmp_path / "c" / "data_batch_3"
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="data_batch_3 has md5"):
        DC._read_cifar_folder(tmp_path / "c", md5s, n_val=5)


def test_real_cifar_md5s_reject_synthetic_files(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataError, match="md5"):
        D.load_cifar10(tmp_path)


class _Call:
    """Pickles as ``func(*args)``: what an attacker's file would do on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious_payloads(marker: Path) -> dict[str, bytes]:
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "eval": pickle.dumps({b"data": _Call(eval, touch), b"labels": []}, protocol=2),
        "exec-in-labels": pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Call(exec, touch)]}, 2),
        "os.system": pickle.dumps(_Call(os.system, f"touch {marker}"), protocol=2),
        "protocol-4": pickle.dumps({b"data": _Call(eval, touch)}, protocol=4),
    }


@pytest.mark.parametrize("kind", ["eval", "exec-in-labels", "os.system", "protocol-4"])
def test_malicious_pickle_is_refused_without_running(tmp_path, kind):
    marker = tmp_path / "pwned"
    payload = _malicious_payloads(marker)[kind]
    if kind == "eval":  # the payload is real: a plain unpickler runs it
        pickle.loads(payload)
        assert marker.exists()
        marker.unlink()
    p = tmp_path / "data_batch_1"
    p.write_bytes(payload)
    with pytest.raises(DataError, match="refused"):
        D.read_cifar_batch(p)  # the md5 check is bypassed: the unpickler is the defence
    assert not marker.exists()


def test_malicious_batch_with_matching_md5_is_refused(tmp_path):
    md5s = _write_cifar(tmp_path / "c")
    marker = tmp_path / "pwned"
    (tmp_path / "c" / "test_batch").write_bytes(_malicious_payloads(marker)["eval"])
    md5s["test_batch"] = hashlib.md5((tmp_path / "c" / "test_batch").read_bytes()).hexdigest()
    with pytest.raises(DataError, match="test_batch asks to load .*eval.*refused"):
        DC._read_cifar_folder(tmp_path / "c", md5s, n_val=5)
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj, msg",
    [
        ([1, 2, 3], "not a dict"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "columns"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "outside 0..9"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "labels"),
    ],
)
def test_malformed_batches(tmp_path, obj, msg):
    p = tmp_path / "b"
    p.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataError, match=msg):
        D.read_cifar_batch(p)


def test_array_larger_than_the_file_is_refused(tmp_path):
    # only allowed globals, but an uninitialised 3 MB array from a file of a few hundred bytes
    p = tmp_path / "b"
    p.write_bytes(pickle.dumps({b"data": _Call(np.ndarray, (1000, 3072), np.dtype("u1")), b"labels": [0] * 1000}, 2))
    with pytest.raises(DataError, match="larger than the file"):
        D.read_cifar_batch(p)


@pytest.mark.parametrize("payload", [b"", b"not a pickle", pickle.dumps({b"data": 1}, protocol=2)[:-5]])
def test_truncated_or_garbage_batch(tmp_path, payload):
    p = tmp_path / "b"
    p.write_bytes(payload)
    with pytest.raises(DataError, match="delete it"):
        D.read_cifar_batch(p)


def test_cifar_missing_says_where_to_put_files(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py.*data_batch_1") as e:
        D.load_dataset("cifar10", tmp_path / "nowhere")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("where", [".", "cifar10/cifar-10-batches-py", "cifar-10-batches-py"])
def test_cifar_folder_locations(tmp_path, where, monkeypatch):
    md5s = _write_cifar(tmp_path / where)
    monkeypatch.setattr(DC, "CIFAR10_FILES", md5s)
    monkeypatch.setattr(DC, "CIFAR10_N_VAL", 5)
    ds = D.load_dataset("cifar10", tmp_path)
    assert Path(ds.source) == tmp_path / where
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 6)


def _tar(path: Path, files: dict[str, bytes], links: tuple[str, ...] = ()) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_download_checks_md5_and_extracts(tmp_path, monkeypatch):
    src = tmp_path / "src" / "cifar-10-batches-py"
    md5s = _write_cifar(src)
    files = {f"cifar-10-batches-py/{n}": (src / n).read_bytes() for n in md5s}
    archive = tmp_path / "mirror.tar.gz"
    archive_md5 = _tar(archive, files)
    monkeypatch.delenv("STEINEBM_OFFLINE")
    monkeypatch.setattr(DC, "CIFAR10_FILES", md5s)
    monkeypatch.setattr(DC, "CIFAR10_N_VAL", 5)
    monkeypatch.setattr(DC, "CIFAR10_URL", archive.as_uri())
    # a corrupt download is not kept
    monkeypatch.setattr(DC, "CIFAR10_ARCHIVE_MD5", "0" * 32)
    with pytest.raises(DataError, match="md5"):
        D.load_cifar10(tmp_path / "cache")
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
    # an intact one is extracted into cifar10/cifar-10-batches-py, and the archive removed
    monkeypatch.setattr(DC, "CIFAR10_ARCHIVE_MD5", archive_md5)
    ds = D.load_cifar10(tmp_path / "cache")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 6)
    got = sorted(p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert got == sorted(f"cifar10/cifar-10-batches-py/{n}" for n in md5s)
    # no download when offline
    monkeypatch.setenv("STEINEBM_OFFLINE", "1")
    with pytest.raises(DataError, match="not found"):
        D.load_cifar10(tmp_path / "cache2")


@pytest.mark.parametrize(
    "files, links",
    [
        ({"cifar-10-batches-py/../../evil": b"x"}, ()),
        ({"/tmp/steinebm-evil-absolute": b"x"}, ()),
        ({"cifar-10-batches-py/data_batch_1": b"x"}, ("cifar-10-batches-py/test_batch",)),
    ],
)
def test_unsafe_archives_are_refused(tmp_path, files, links):
    archive = tmp_path / "a" / "cifar.tar.gz"
    archive.parent.mkdir()
    _tar(archive, files, links)
    dest = tmp_path / "a" / "out"
    dest.mkdir()
    with pytest.raises(DataError, match="holds an unsafe member|holds a link"):
        DF._safe_extract(archive, dest, "cifar-10-batches-py")
    assert not (tmp_path / "a" / "evil").exists() and not Path("/tmp/steinebm-evil-absolute").exists()
    assert list(dest.iterdir()) == []


def test_full_cifar10(full_cifar_dir):
    ds = D.load_dataset("cifar10", full_cifar_dir.parents[1])  # finds cifar10/cifar-10-batches-py
    assert (len(ds.train), len(ds.val), len(ds.test)) == (45_000, 5_000, 10_000)
    assert ds.image_shape == (3, 32, 32) and ds.dim == 3072 and ds.classes == tuple(CIFAR_NAMES)
    assert torch.bincount(ds.test.y, minlength=10).tolist() == [1000] * 10
    assert torch.bincount(torch.cat([ds.train.y, ds.val.y]), minlength=10).tolist() == [5000] * 10
    assert float(ds.train.x.min()) == 0.0 and float(ds.train.x.max()) == 1.0
    # pixel / 255 exactly against an independent read (the trusted, md5-checked original file)
    with open(full_cifar_dir / "test_batch", "rb") as fh:
        ref = pickle.load(fh, encoding="bytes")
    np.testing.assert_array_equal(ds.test.x[:50].numpy(), ref[b"data"][:50].astype(np.float32) / np.float32(255))
    assert ds.test.y[:50].tolist() == ref[b"labels"][:50]


# --- image folders -------------------------------------------------------------------------------


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), "RGB").save(path)


def _solid(w: int, h: int, value: int) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _coords(w: int, h: int) -> np.ndarray:
    """R = 3 x, G = 2 y, B = 77: every pixel says where it came from."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([3 * x, 2 * y, np.full_like(x, 77)], -1)


def _all(ds: D.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([ds.train.x, ds.val.x, ds.test.x]), torch.cat([ds.train.y, ds.val.y, ds.test.y])


def test_image_folder_labels_from_sub_folders_and_split(tmp_path):
    names = {"cats": 3, "dogs": 2, "ants": 2}
    value = 0
    for cls, n in names.items():
        for j in range(n):
            ext = ["png", "bmp", "PNG"][j % 3]
            _save(tmp_path / cls / f"{j}.{ext}", _solid(10, 10, value))
            value += 10
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    ds = D.load_dataset("image-folder", tmp_path, image_size=10)
    assert ds.classes == ("ants", "cats", "dogs") and ds.image_shape == (3, 10, 10)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5, 1, 1)
    x, y = _all(ds)
    # every image exactly once, with its own label: image value v was written into class folder c
    expected = {0: 1, 10: 1, 20: 1, 30: 2, 40: 2, 50: 0, 60: 0}
    got = {round(float(x[i, 0]) * 255): int(y[i]) for i in range(7)}
    assert got == expected
    # the split is the seeded permutation of the images in sorted path order (last one: validation)
    order = [50, 60, 0, 10, 20, 30, 40]  # ants/0, ants/1, cats/0.png, cats/1.bmp, cats/2.PNG, dogs/0, dogs/1
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(42)).tolist()
    assert [round(float(v) * 255) for v in ds.train.x[:, 0]] == [order[i] for i in perm[:5]]
    assert [round(float(v) * 255) for v in ds.test.x[:, 0]] == [order[perm[5]]]
    assert [round(float(v) * 255) for v in ds.val.x[:, 0]] == [order[perm[6]]]


def test_image_folder_without_sub_folders_has_zero_labels(tmp_path):
    for j in range(4):
        _save(tmp_path / f"{j}.png", _solid(6, 6, 40 * j))
    _save(tmp_path / "sub" / "x.png", _solid(6, 6, 255))
    ds = D.load_image_folder(tmp_path, image_size=6)
    x, y = _all(ds)
    assert y.tolist() == [0] * 5 and ds.classes == ()
    assert sorted(round(float(v) * 255) for v in x[:, 0]) == [0, 40, 80, 120, 255]


@pytest.mark.parametrize("w, h", [(8, 12), (12, 8), (8, 8)])
def test_image_folder_centre_crop_geometry(tmp_path, w, h):
    for j in range(3):
        _save(tmp_path / f"{j}.png", _coords(w, h))
    ds = D.load_image_folder(tmp_path, image_size=8)
    img = ds.train.x[0].reshape(3, 8, 8).mul(255).round().to(torch.int64)
    left, top = (w - 8) // 2, (h - 8) // 2
    assert img[0].tolist() == [[3 * (left + j) for j in range(8)] for _ in range(8)]  # R = 3 x
    assert img[1].tolist() == [[2 * (top + i)] * 8 for i in range(8)]  # G = 2 y
    assert img[2].unique().tolist() == [77]


def test_image_folder_resize_then_crop(tmp_path):
    # 32 x 48: resized to 8 x 12, then rows 2..9 kept; the red band in the top 4 source rows is cut away
    arr = np.zeros((48, 32, 3), np.uint8)
    arr[..., 2] = 255
    arr[:4] = (255, 0, 0)
    for j in range(3):
        _save(tmp_path / f"{j}.png", arr)
    ds = D.load_image_folder(tmp_path, image_size=8)
    img = ds.test.x[0].reshape(3, 8, 8)
    assert float(img[0].max()) == 0.0 and float(img[2].min()) == 1.0


def test_image_folder_modes_and_formats(tmp_path):
    Image.new("L", (5, 5), 128).save(tmp_path / "grey.png")
    Image.new("RGBA", (5, 5), (10, 20, 30, 40)).save(tmp_path / "rgba.webp", lossless=True)
    Image.new("RGB", (5, 5), (200, 100, 50)).save(tmp_path / "c.jpeg", quality=100)
    ds = D.load_image_folder(tmp_path, image_size=5)
    x, _ = _all(ds)
    assert x.shape == (3, 75)
    firsts = sorted(tuple(round(float(v) * 255) for v in row.reshape(3, 25)[:, 12]) for row in x)
    assert firsts[0] == (10, 20, 30) and firsts[1] == (128, 128, 128)
    assert all(abs(a - b) <= 3 for a, b in zip(firsts[2], (200, 100, 50)))  # JPEG: nearly exact


def test_corrupt_image_names_the_file(tmp_path):
    for j in range(3):
        _save(tmp_path / f"{j}.png", _solid(4, 4, 9))
    (tmp_path / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"1\.png") as e:
        D.load_image_folder(tmp_path, image_size=4)
    assert "\n" not in str(e.value)


def test_truncated_jpeg_names_the_file(tmp_path):
    for j in range(3):
        Image.fromarray(_coords(40, 40).astype(np.uint8)).save(tmp_path / f"{j}.jpg")
    raw = (tmp_path / "2.jpg").read_bytes()
    (tmp_path / "2.jpg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"2\.jpg"):
        D.load_image_folder(tmp_path, image_size=8)


def test_empty_missing_and_too_small_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        D.load_image_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        D.load_image_folder(tmp_path / "nowhere")
    _save(tmp_path / "two" / "a.png", _solid(4, 4, 1))
    _save(tmp_path / "two" / "b.png", _solid(4, 4, 2))
    with pytest.raises(DataError, match="at least 3"):
        D.load_image_folder(tmp_path / "two", image_size=4)
    for bad in [{"image_size": 0}, {"max_images": 0}, {"image_size": 2.5}]:
        with pytest.raises(DataError, match="positive integer"):
            D.load_image_folder(tmp_path / "two", **bad)


def test_max_images_and_memory_guard(tmp_path, monkeypatch):
    for j in range(10):
        _save(tmp_path / f"{j:02d}.png", _solid(4, 4, 20 * j))
    ds = D.load_image_folder(tmp_path, image_size=4, max_images=6)
    x, _ = _all(ds)
    assert sorted(round(float(v) * 255) for v in x[:, 0]) == [0, 20, 40, 60, 80, 100]  # the first 6 files
    monkeypatch.setattr(DB, "_physical_memory", lambda: 1000)
    with pytest.raises(DataError, match="max_images"):
        D.load_image_folder(tmp_path, image_size=4)


# --- CelebA --------------------------------------------------------------------------------------


def test_celeba_crop_window(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"
    for j in range(1, 4):
        _save(folder / f"{j:06d}.png", _coords(178, 218) // np.array([3, 2, 1]))  # R = x, G = y
    ds = D.load_dataset("celeba", tmp_path, image_size=108)  # 108: the crop itself, no resize
    assert ds.image_shape == (3, 108, 108) and ds.source == str(folder)
    img = ds.train.x[0].reshape(3, 108, 108).mul(255).round().to(torch.int64)
    assert img[0, 0].tolist() == list(range(35, 143))  # columns 35..142 of 178
    assert img[1, :, 0].tolist() == list(range(55, 163))  # rows 55..162 of 218
    assert torch.equal(img[0], img[0, :1].expand(108, 108)) and torch.equal(img[1], img[1, :, :1].expand(108, 108))


def test_celeba_default_64_keeps_only_the_crop(tmp_path):
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[..., 0] = 255  # red outside the crop window
    arr[55:163, 35:143] = (0, 255, 0)  # green inside
    folder = tmp_path / "img_align_celeba"
    for j in range(1, 41):
        _save(folder / f"{j:06d}.png", arr)
    ds = D.load_celeba(tmp_path)
    assert ds.image_shape == (3, 64, 64) and ds.dim == 64 * 64 * 3
    assert (len(ds.train), len(ds.val), len(ds.test)) == (36, 2, 2)  # 5% validation, 5% test
    x, y = _all(ds)
    assert float(x.reshape(40, 3, 64, 64)[:, 0].max()) == 0.0 and float(x.reshape(40, 3, 64, 64)[:, 1].min()) == 1.0
    assert y.tolist() == [0] * 40
    few = D.load_celeba(tmp_path, max_images=10)
    assert (len(few.train), len(few.val), len(few.test)) == (8, 1, 1)


def test_celeba_jpeg_and_errors(tmp_path):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for j in range(1, 4):
        Image.new("RGB", (178, 218), (120, 60, 30)).save(folder / f"{j:06d}.jpg", quality=95)
    ds = D.load_celeba(tmp_path)
    x, _ = _all(ds)
    assert x.shape == (3, 3 * 64 * 64) and torch.allclose(
        x.reshape(3, 3, -1).mean(-1)[0], torch.tensor([120.0, 60, 30]) / 255, atol=3 / 255
    )
    Image.new("RGB", (100, 100)).save(folder / "000004.jpg")
    with pytest.raises(DataError, match="000004.jpg is 100x100"):
        D.load_celeba(tmp_path)
    with pytest.raises(DataError, match="img_align_celeba"):
        D.load_celeba(tmp_path / "nowhere")


def test_celeba_sample():
    if not CELEBA_SAMPLE.is_dir():
        pytest.skip(f"CelebA sample not found at {CELEBA_SAMPLE}")
    ds = D.load_dataset("celeba", CELEBA_SAMPLE)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (28, 2, 2)
    x, _ = _all(ds)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.1


# --- LSUN ----------------------------------------------------------------------------------------


def _encoded(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


def test_lsun_missing_lmdb_package(tmp_path, monkeypatch):
    (tmp_path / "data.mdb").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "lmdb", None)  # import lmdb raises ImportError
    with pytest.raises(DataError, match=r"pip install steinebm\[lsun\]"):
        D.load_dataset("lsun", tmp_path)


def test_lsun_lmdb(tmp_path):
    lmdb = pytest.importorskip("lmdb", reason="the optional lmdb package is not installed (pip install lmdb)")
    db = tmp_path / "bedroom_train_lmdb"
    env = lmdb.open(str(db), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for j in range(5):
            txn.put(f"key{j}".encode(), _encoded(_coords(8, 12), "WEBP" if j % 2 else "PNG"))
    env.close()
    ds = D.load_lsun(db, image_size=8)
    assert ds.name == "lsun" and ds.image_shape == (3, 8, 8)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (3, 1, 1)
    x, y = _all(ds)
    img = x.reshape(5, 3, 8, 8).mul(255).round().to(torch.int64)
    assert img[:, 1, :, 0].tolist() == [[2 * (2 + i) for i in range(8)]] * 5  # rows 2..9 of 12: centre crop
    assert img[:, 0, 0, :].tolist() == [[3 * j for j in range(8)]] * 5 and y.tolist() == [0] * 5
    assert len(_all(D.load_lsun(db, image_size=8, max_images=3))[0]) == 3
    # a larger image: shorter side to 8, then the crop
    env = lmdb.open(str(db), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"key9", _encoded(_solid(64, 40, 200), "JPEG"))
        txn.put(b"zzz", b"not an image")
    env.close()
    with pytest.raises(DataError, match="zzz"):
        D.load_lsun(db, image_size=8)


def test_lsun_image_folder_and_missing(tmp_path):
    for j in range(3):
        _save(tmp_path / "lsun" / "a" / f"{j}.png", _solid(20, 10, 30 * j))
    ds = D.load_dataset("lsun", tmp_path, image_size=5)
    x, y = _all(ds)
    assert ds.image_shape == (3, 5, 5) and y.tolist() == [0] * 3
    assert sorted(round(float(v) * 255) for v in x[:, 0]) == [0, 30, 60]
    with pytest.raises(DataError, match="data.mdb"):
        D.load_dataset("lsun", tmp_path / "nowhere")


def test_datasets_listed_and_split_slots_match_indexing():
    assert {"cifar10", "celeba", "lsun", "image-folder", "mnist", "mnist-embedded"} <= set(D.DATASETS)
    for n in (3, 7, 40, 101):
        h = DB._holdout_size(n, "x")
        perm, split, row = DM._split_slots(n, h)
        assert sorted(perm.tolist()) == list(range(n))
        n_tr = n - 2 * h
        for k, idx in ((0, perm[:n_tr]), (2, perm[n_tr : n_tr + h]), (1, perm[n_tr + h :])):
            assert (split[idx] == k).all() and row[idx].tolist() == list(range(len(idx)))
