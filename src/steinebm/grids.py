"""Image grids: images tiled into one PNG (Pillow), and a latent walk as a PNG strip and a GIF.
The project's own writer (torchvision's ``make_grid`` layout), used by training, sampling and
the reproduction commands alike."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["image_grid", "enlarge", "grid_picture", "save_image_grid", "save_walk"]


def image_grid(images: Tensor, image_shape: Sequence[int], nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images (n, d) or (n, C, H, W), values in [0, 1] (clipped), ``nrow`` to a row (as
    torchvision's ``make_grid``; about square by default), into one uint8 array (H', W') for grey
    or (H', W', 3) for colour."""
    n = images.shape[0]
    c, h, w = image_shape
    x = images.detach().float().cpu().reshape(n, c, h, w).clamp(0, 1)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad) * 0.5
    for k in range(n):
        r, q = divmod(k, nrow)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = x[k]
    arr = (grid.numpy() * 255).round().astype(np.uint8)
    return arr[0] if c == 1 else arr.transpose(1, 2, 0)


def enlarge(pixels: np.ndarray, scale: int) -> np.ndarray:
    """An image (H, W) or (H, W, C) enlarged ``scale`` times by nearest neighbour: each pixel
    becomes a ``scale`` x ``scale`` block, (H * scale, W * scale[, C]). How every grid the project
    writes is enlarged (the same pixels as Pillow's NEAREST resize by a whole factor).

    >>> enlarge(np.array([[1, 2]], np.uint8), 2).tolist()
    [[1, 1, 2, 2], [1, 1, 2, 2]]
    """
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else pixels


def grid_picture(
    images: Tensor, image_shape: Sequence[int], nrow: int | None = None, scale: int = 2, pad: int = 2
) -> Image.Image:
    """:func:`image_grid` enlarged ``scale`` times (:func:`enlarge`), as a Pillow image: the
    picture :func:`save_image_grid` writes, and the report keeps in memory."""
    from PIL import Image

    return Image.fromarray(enlarge(image_grid(images, image_shape, nrow, pad), scale))


def save_image_grid(
    images: Tensor, path: str | Path, image_shape: Sequence[int], nrow: int | None = None, scale: int = 2, pad: int = 2
) -> Path:
    """Save ``images`` ((n, ...) in [0, 1], each reshaped to ``image_shape``, (C, H, W)) as one PNG
    grid of ``nrow`` images to a row (about square by default), ``pad`` pixels apart, each pixel enlarged
    ``scale`` times; returns the path. The values are rounded to 8-bit levels."""
    img = grid_picture(images, image_shape, nrow, scale, pad)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_walk(frames: Tensor, path: str | Path, image_shape: Sequence[int], scale: int = 2) -> tuple[Path, Path]:
    """A latent random walk, frames (steps, chains, ...): a PNG strip (one row per chain, steps
    left to right) and an animated GIF beside it (one frame per step, chains side by side)."""
    steps, chains = frames.shape[:2]
    path = Path(path).with_suffix(".png")
    strip = frames.transpose(0, 1).reshape(steps * chains, *frames.shape[2:])  # chain-major
    save_image_grid(strip, path, image_shape, nrow=steps, scale=scale)
    pictures = []
    for t in range(steps):
        img = grid_picture(frames[t], image_shape, chains, scale)
        pictures.append(img.convert("P") if img.mode == "RGB" else img)
    gif = path.with_suffix(".gif")
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=80, loop=0)
    return path, gif
