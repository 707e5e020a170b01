"""Scores of generated MNIST images under both classifiers and the 100-image grid protocol,
against numbers computed here with numpy from the classifiers' own probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from steinebm.data import load_dataset
from steinebm.engine import build as B
from steinebm.engine import train as T
from steinebm.engine.config import Config
from steinebm.errors import UserError
from steinebm.evaluation.classifiers import load_classifier
from steinebm.evaluation.sample_scores import grid_scores, read_grid, score_images


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-embedded").test.x[:200]


def _is_by_hand(p: np.ndarray) -> float:
    marginal = p.mean(0)
    return float(np.exp(np.mean(np.sum(p * (np.log(p + 1e-30) - np.log(marginal + 1e-30)), axis=1))))


def test_grid_scores_by_hand(digits):
    got = grid_scores(digits)
    for name in ("mnist", "mnist-lenet"):
        with torch.no_grad():
            p = torch.softmax(load_classifier(name)(digits[:100]).double(), 1).numpy()
        assert got[f"grid_{name}_is"] == pytest.approx(_is_by_hand(p), rel=1e-6)
        pred = p.argmax(1)
        assert got[f"grid_{name}_classes"] == len(set(pred.tolist()))
        assert got[f"grid_{name}_share_8"] == pytest.approx(float(np.mean(pred == 8)))
        assert got[f"grid_{name}_top_share"] == pytest.approx(np.bincount(pred).max() / 100)


def test_score_images_splits_by_hand(digits):
    got = score_images(digits, ("mnist-lenet",), n_splits=4)
    with torch.no_grad():
        p = torch.softmax(load_classifier("mnist-lenet")(digits).double(), 1).numpy()
    per = [_is_by_hand(p[i * 50 : (i + 1) * 50]) for i in range(4)]
    assert got["mnist-lenet_is"] == pytest.approx(np.mean(per), rel=1e-6)
    assert got["mnist-lenet_is_std"] == pytest.approx(np.std(per), rel=1e-5, abs=1e-9)


def test_read_grid_cuts_tiles_row_by_row(tmp_path, digits):
    x = digits[:6].numpy().reshape(6, 28, 28)
    pad = 2
    canvas = np.zeros((2 * 28 + 3 * pad, 3 * 28 + 4 * pad), dtype=np.uint8)
    for i in range(6):
        r, c = divmod(i, 3)
        canvas[pad + r * 30 : pad + r * 30 + 28, pad + c * 30 : pad + c * 30 + 28] = np.round(x[i] * 255)
    Image.fromarray(canvas).convert("RGBA").save(tmp_path / "g.png")
    got = read_grid(tmp_path / "g.png", rows=2, cols=3, pad=pad).numpy()
    np.testing.assert_allclose(got, np.round(x.reshape(6, -1) * 255) / 255, atol=1e-7)
    with pytest.raises(UserError, match="not the"):
        read_grid(tmp_path / "g.png", rows=10, cols=10)


def test_training_logs_sample_scores_and_grids(tmp_path):
    cfg = Config(
        method="steingan",
        dataset="mnist-embedded",
        n_train=200,
        batch_size=50,
        noise_dim=8,
        max_steps=4,
        eval_samples=100,
        progress=False,
        out_dir=str(tmp_path / "run"),
        threads=1,
    )
    T.train(cfg)
    last = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    G = B.load_generator(cfg.out_dir)
    from steinebm.evaluation.sample_scores import generated_images

    x = generated_images(G, 100, seed=0, batch_size=100)
    with torch.no_grad():
        p = torch.softmax(load_classifier("mnist")(x).double(), 1).numpy()
    assert last["grid_mnist_is"] == pytest.approx(_is_by_hand(p), rel=1e-5)
    png = tmp_path / "run" / "samples" / "step-0000004.png"
    assert png.exists()
    with pytest.raises(UserError, match="eval_samples"):
        Config(method="steincd", eval_samples=100).validate()
