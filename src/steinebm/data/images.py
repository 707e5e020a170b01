"""Natural images: aligned CelebA, LSUN (an lmdb export or an image folder) and any folder of
images, centre-cropped and resized."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from steinebm.data.base import (
    SPLIT_SEED,
    Dataset,
    Split,
    Transform,
    _check_memory,
    _holdout_size,
    _shown,
    data_root,
)
from steinebm.errors import DataError, first_line

__all__ = ["load_image_folder", "load_celeba", "load_lsun", "IMAGE_EXTENSIONS", "CELEBA_FOLDER", "CELEBA_CROP"]

# --- image datasets: CelebA, LSUN, any image folder ----------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CELEBA_FOLDER = "img_align_celeba"
CELEBA_CROP = 108  # the usual DCGAN centre crop of the aligned 178 x 218 faces
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
            f"cannot read image {what} ({type(e).__name__}: {first_line(e)}): delete or replace it"
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
            f"{folder} is not a readable lmdb database ({first_line(e)}): point --data-dir at LSUN's *_lmdb folder"
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
        raise DataError(f"cannot read the lmdb database in {folder} ({first_line(e)}); check the export") from None
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
