"""The image shapes the project is built around, named once."""

from __future__ import annotations

__all__ = ["MNIST_SHAPE", "MNIST_DIM", "CIFAR_SHAPE", "CIFAR_DIM"]

MNIST_SHAPE = (1, 28, 28)  # (channels, height, width) of an MNIST image; also Fashion-MNIST's
MNIST_DIM = 1 * 28 * 28  # an MNIST image as one flattened row
CIFAR_SHAPE = (3, 32, 32)  # (channels, height, width) of a CIFAR-10 image
CIFAR_DIM = 3 * 32 * 32  # a CIFAR-10 image as one flattened row (CHW order)
