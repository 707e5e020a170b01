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

One module per family: :mod:`~steinebm.data.base` (the Dataset), :mod:`~steinebm.data.fetch`
(downloads), :mod:`~steinebm.data.idx` (MNIST, Fashion-MNIST, IDX folders), :mod:`~steinebm.data.cifar`,
:mod:`~steinebm.data.images` (CelebA, LSUN, image folders).
"""

from __future__ import annotations

import os

from steinebm.data.base import DATASETS, Dataset, Split, data_root, fingerprint
from steinebm.data.cifar import load_cifar10, read_cifar_batch, read_cifar_meta
from steinebm.data.idx import load_fashion_mnist, load_idx, load_mnist, load_mnist_embedded, read_idx
from steinebm.data.images import load_celeba, load_image_folder, load_lsun
from steinebm.errors import DataError

__all__ = [
    "load_dataset",
    "Split",
    "Dataset",
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
    "load_mnist_embedded",
]


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
