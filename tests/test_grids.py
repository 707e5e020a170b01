"""steinebm.grids: the one nearest-neighbour enlargement every written grid goes through."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from steinebm.grids import enlarge, grid_picture, image_grid, save_image_grid, save_walk


def _by_hand(pixels: np.ndarray, k: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    out = np.zeros((h * k, w * k, *pixels.shape[2:]), pixels.dtype)
    for i in range(h):
        for j in range(w):
            for a in range(k):
                for b in range(k):
                    out[i * k + a, j * k + b] = pixels[i, j]
    return out


@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_enlarge_repeats_each_pixel_k_by_k(shape, k):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    got = enlarge(pixels, k)
    assert got.dtype == np.uint8 and np.array_equal(got, _by_hand(pixels, k))
    # the same pixels as Pillow's NEAREST resize, which the grids were enlarged with before
    img = Image.fromarray(pixels)
    assert np.array_equal(got, np.asarray(img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)))


def test_enlarge_refuses_a_scale_below_one():
    with pytest.raises(ValueError, match="positive"):
        enlarge(np.zeros((2, 2), np.uint8), 0)


@pytest.mark.parametrize("image_shape", [(1, 4, 5), (3, 4, 4)])
def test_written_grids_and_walks_are_the_enlarged_grid(tmp_path, image_shape):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, *image_shape, generator=g)
    want = enlarge(image_grid(images, image_shape, 3), 2)
    assert np.array_equal(np.asarray(grid_picture(images, image_shape, 3)), want)
    with Image.open(save_image_grid(images, tmp_path / "g.png", image_shape, nrow=3)) as im:
        assert np.array_equal(np.asarray(im), want)
    frames = torch.rand(4, 2, *image_shape, generator=g)
    png, gif = save_walk(frames, tmp_path / "walk", image_shape, scale=3)
    strip = frames.transpose(0, 1).reshape(8, *image_shape)
    with Image.open(png) as im:
        assert np.array_equal(np.asarray(im), enlarge(image_grid(strip, image_shape, 4), 3))
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.size == grid_picture(frames[0], image_shape, 2, 3).size
