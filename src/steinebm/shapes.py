"""The image shapes the project is built around, named once."""

from __future__ import annotations

__all__ = ["MNIST_SHAPE", "MNIST_DIM"]

MNIST_SHAPE = (1, 28, 28)  # (channels, height, width) of an MNIST image; also Fashion-MNIST's
MNIST_DIM = 1 * 28 * 28  # an MNIST image as one flattened row
