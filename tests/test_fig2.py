"""reproduce fig2 end to end at a toy scale on an in-memory CIFAR-shaped dataset: the three
generators train, every image set is scored, the table and the class-by-row grids are written."""

from __future__ import annotations

import json

import torch

from steinebm import reproduce, reproduce_images
from steinebm.data import Dataset, Split


def _tiny() -> Dataset:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.rand(n, 3072, generator=g), torch.arange(n) % 10)

    return Dataset("cifar10", split(40), split(10), split(20), (3, 32, 32), "memory")


def test_fig2_toy_scale(tmp_path, monkeypatch):
    data = _tiny()
    monkeypatch.setattr(reproduce, "load_config_dataset", lambda cfg: data)
    monkeypatch.setattr(reproduce_images, "load_config_dataset", lambda cfg: data)
    monkeypatch.setitem(
        reproduce_images.FIG2_SCALES,
        "toy",
        dict(
            train=dict(epochs=1, batch_size=8, width=8, gen_width=8, disc_width=8, code_dim=8),
            images=40,
            duplicates=4,
            transfer=dict(epochs=1, batch_size=20, lr=0.05, blocks=1),
        ),
    )
    out = tmp_path / "fig2"
    summary = reproduce_images.fig2(out=out, scale="toy", jobs=1, log=lambda s: None)
    names = list(summary["rows"])
    assert names == [
        "real training set",
        "10 duplicated",
        "SteinGAN",
        "SteinGAN without kernel",
        "SteinGAN, RBF kernel on pixels",
        "DCGAN",
    ]
    for r in summary["rows"].values():
        assert 1.0 <= r["is_mean"] <= 10.0 and 0.0 <= r["accuracy"] <= 1.0 and r["n_images"] == 40
    md = (out / "fig2.md").read_text()
    assert "61.09 %" in md and "6.58" in md  # the paper's numbers beside ours
    assert len(summary["claims"]) == 3
    for name in ("steingan", "steingan-without-kernel", "steingan-rbf-kernel-on-pixels", "dcgan"):
        assert (out / f"fig2-{name}.png").exists()
    # a second call reuses the runs and the cached scores
    cached = json.loads((out / "scores" / "steingan.json").read_text())
    again = reproduce_images.fig2(out=out, scale="toy", jobs=1, log=lambda s: None)
    assert again["rows"]["SteinGAN"]["accuracy"] == cached["accuracy"]
