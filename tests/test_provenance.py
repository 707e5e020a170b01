"""A run records the data it was trained on (name and fingerprint, in config.yaml and the
checkpoint), and is not scored, resumed or reused on other data unless the user names it."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from steinebm.cli import main
from steinebm.data import Dataset, Split, fingerprint, load_dataset
from steinebm.engine import build as B
from steinebm.engine import train as T
from steinebm.engine.config import Config
from steinebm.evaluation.likelihood import log_likelihood

SMALL = ["n_hidden=3", "batch_size=20", "max_steps=4", "progress=false", "log_every=2"]


def _idx(path: Path, arr: np.ndarray) -> None:
    """An uncompressed IDX file written by hand: 0 0 8 ndim, big-endian dims, bytes."""
    path.write_bytes(bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes())


def _idx_folder(folder: Path, seed: int) -> Path:
    """120 training and 30 test 8 x 8 images with labels, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    _idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (120, 8, 8), dtype=np.uint8))
    _idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 10, 120, dtype=np.uint8))
    _idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (30, 8, 8), dtype=np.uint8))
    _idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 30, dtype=np.uint8))
    return folder


def _random_mnist_sized(name: str) -> Dataset:
    g = torch.Generator().manual_seed(3)

    def split(n: int) -> Split:
        return Split(torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g))

    return Dataset(name, split(100), split(20), split(20), (1, 28, 28), "memory")


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    # training with progress=false prints one "<method> seed <n>: epoch ..." line per evaluation
    lines = [ln for ln in err.splitlines() if ln.strip() and " seed " not in ln.split(":")[0]]
    assert len(lines) == 1 and lines[0].startswith("steinebm: error: "), err
    return lines[0]


def test_a_run_trained_in_python_records_what_it_was_trained_on(tmp_path):
    """A Fashion-MNIST dataset handed to train() with the config's default dataset (mnist): the
    run says fashion-mnist, with the data's fingerprint, in config.yaml and in the checkpoint."""
    data = _random_mnist_sized("fashion-mnist")
    cfg = Config(out_dir=str(tmp_path / "run"), n_hidden=3, batch_size=20, max_steps=2, progress=False)
    assert cfg.dataset == "mnist"
    T.train(cfg, dataset=data)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    fp = fingerprint(data)
    assert saved["dataset"] == "fashion-mnist" and saved["data_fingerprint"] == fp
    ck = T.load_checkpoint(tmp_path / "run")["config"]
    assert ck["dataset"] == "fashion-mnist" and ck["data_fingerprint"] == fp


def test_evaluate_refuses_a_run_trained_on_other_data_unless_named(tmp_path, capsys):
    """Trained in Python on data the config does not name: `evaluate` used to score it on the
    config's dataset without a word. Now it refuses, unless --dataset names the data."""
    run = tmp_path / "run"
    data = _random_mnist_sized("toy")  # not a dataset name: the config keeps mnist-embedded
    cfg = Config(dataset="mnist-embedded", out_dir=str(run), n_hidden=3, batch_size=20, max_steps=2, progress=False)
    T.train(cfg, dataset=data)
    code, _, err = _run(["evaluate", str(run)], capsys)
    assert code == 2
    line = _one_line_error(err)
    assert fingerprint(data)[:12] in line and "--dataset NAME" in line and "mnist-embedded" in line
    code, out, _ = _run(["evaluate", str(run), "--dataset", "mnist-embedded"], capsys)
    assert code == 0
    ev = json.loads(out)
    emb = load_dataset("mnist-embedded")
    assert ev["dataset"] == "mnist-embedded" and ev["same_data_as_training"] is False
    assert ev["data_fingerprint"] == fingerprint(emb)
    assert ev["log_likelihood_nats"] == pytest.approx(log_likelihood(B.load(run), emb.test.x, "exact").value, abs=1e-9)
    # a dataset of another image size, or an unknown name: one line each
    code, _, err = _run(
        ["evaluate", str(run), "--dataset", "idx", "--data-dir", str(_idx_folder(tmp_path / "d", 0))], capsys
    )
    assert code == 2 and "has 64 values per image, the model of" in _one_line_error(err)
    code, _, err = _run(["evaluate", str(run), "--dataset", "fashion"], capsys)
    assert code == 2 and "unknown dataset 'fashion'" in _one_line_error(err)


def test_idx_run_is_scored_resumed_and_retrained_only_on_its_data(tmp_path, capsys):
    data, run = _idx_folder(tmp_path / "data", seed=0), tmp_path / "run"
    assert _run(["train", "dataset=idx", *SMALL, f"out_dir={run}", "--data-dir", str(data)], capsys)[0] == 0
    fp = fingerprint(load_dataset("idx", data))
    assert yaml.safe_load((run / "config.yaml").read_text())["data_fingerprint"] == fp
    code, out, _ = _run(["evaluate", str(run)], capsys)
    assert code == 0 and json.loads(out)["same_data_as_training"] is True and json.loads(out)["n"] == 30

    _idx_folder(data, seed=1)  # the files change under the run
    code, _, err = _run(["evaluate", str(run)], capsys)
    assert code == 2 and f"of fingerprint {fp[:12]}" in _one_line_error(err)
    code, _, err = _run(
        ["train", "dataset=idx", *SMALL, "max_steps=8", f"out_dir={run}", "--resume", "--data-dir", str(data)], capsys
    )
    assert code == 2 and f"cannot resume {run}: it was trained on idx data" in _one_line_error(err)
    # its config.yaml used again: the recorded fingerprint holds, until set to null
    again = ["train", str(run / "config.yaml"), f"out_dir={tmp_path / 'again'}"]
    code, _, err = _run(again, capsys)
    assert code == 2 and "set data_fingerprint=null" in _one_line_error(err)
    assert not (tmp_path / "again" / T.CHECKPOINT).exists()
    assert _run([*again, "data_fingerprint=null"], capsys)[0] == 0
    # named on purpose: scored, and said to be other data
    code, out, _ = _run(["evaluate", str(run), "--dataset", "idx"], capsys)
    assert code == 0 and json.loads(out)["same_data_as_training"] is False


def test_runs_saved_without_a_fingerprint_still_load(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as m:  # training as it was before runs recorded their data
        m.setattr(T, "record_data", lambda cfg, data: cfg)
        assert _run(["train", "dataset=mnist-embedded", *SMALL, f"out_dir={run}"], capsys)[0] == 0
    assert "data_fingerprint" not in T.load_checkpoint(run)["config"] or not T.load_checkpoint(run)["config"].get(
        "data_fingerprint"
    )
    code, out, _ = _run(["evaluate", str(run)], capsys)
    assert code == 0 and json.loads(out)["same_data_as_training"] is None
    assert (
        _run(["train", "dataset=mnist-embedded", *SMALL, "max_steps=6", f"out_dir={run}", "--resume"], capsys)[0] == 0
    )
    assert T.load_checkpoint(run)["step"] == 6


def test_report_shows_the_fingerprint(tmp_path, capsys):
    from steinebm.reproduction.report import write_report

    run = tmp_path / "run"
    assert _run(["train", "dataset=mnist-embedded", *SMALL, f"out_dir={run}"], capsys)[0] == 0
    html = write_report([run], tmp_path / "r.html", samples=0).read_text()
    assert "data fingerprint" in html and fingerprint(load_dataset("mnist-embedded"))[:12] in html


def test_reproduce_fig1a_on_an_idx_folder_and_not_on_changed_data(tmp_path, capsys):
    data, out = _idx_folder(tmp_path / "data", seed=0), tmp_path / "fig"
    argv = ["reproduce", "fig1a", "--dataset", "idx", "--data-dir", str(data), "--out", str(out), "--no-sweep"]
    argv += ["--seeds", "1", "--epochs", "1", "--methods", "CD-1,SteinCD", "--jobs", "1"]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "idx" and [r["method"] for r in summary["rows"]] == ["CD-1", "SteinCD"]
    # the B = 0, b = mean reference, by hand: log N(x; training mean, I) averaged over the test images
    ds = load_dataset("idx", data)
    mu, xt = ds.train.x.double().mean(0).numpy(), ds.test.x.double().numpy()
    expect = float(np.mean(-0.5 * ((xt - mu) ** 2).sum(1) - 0.5 * 64 * np.log(2 * np.pi)))
    assert summary["baseline_test_ll"] == pytest.approx(expect, abs=1e-6)
    # the same --out on changed files: the finished runs are not reused as if nothing had changed
    _idx_folder(data, seed=1)
    code, _, err = _run(argv, capsys)
    assert code == 2 and "holds a run made on other data" in _one_line_error(err)


def test_reproduce_with_missing_data_creates_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["reproduce", "fig1a", "--dataset", "idx", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "IDX folder" in _one_line_error(err)
    assert not out.exists() and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("figure", ["fig1b", "fig1c", "fig1d"])
def test_generator_figures_refuse_data_the_mnist_classifier_cannot_score(tmp_path, capsys, figure):
    out = tmp_path / "out"
    code, _, err = _run(["reproduce", figure, "--dataset", "fashion-mnist", "--out", str(out)], capsys)
    assert code == 2 and "MNIST classifier" in _one_line_error(err)
    assert not out.exists()
