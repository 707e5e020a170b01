import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from steinebm.cli import main
from steinebm.data import load_dataset

SMALL = ["dataset=mnist-embedded", "n_train=300", "batch_size=50", "n_hidden=3", "progress=false"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steinebm.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "method=foo"], "method='foo'"),
        (["train", "epsilon=-1"], "epsilon=-1"),
        (["train", "epsilonn=0.1"], "did you mean 'epsilon'"),
        (["train", "batch_size=ten"], "must be an integer"),
        (["train", "beta1=1.5"], "beta1"),
        (["train", "seed=1", "nokey"], "key=value"),
        (["train", "/no/such/config.yaml"], "cannot read config"),
        (["train", "dataset=mnist", "--data-dir", "/no/such/dir"], "MNIST not found"),
        (["evaluate", "/no/such/run"], "no checkpoint"),
        (["sample", "/no/such/run"], "no checkpoint"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, capsys):
    argv = [*args, f"out_dir={tmp_path / 'r'}"] if args[0] == "train" else args
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("steinebm: error:"), err
    assert needle in lines[0]
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_real_process_bad_input_has_no_traceback(tmp_path):
    for args in (["train", "epsilon=0", f"out_dir={tmp_path}"], ["evaluate", str(tmp_path)], ["reproduce", "fig9"]):
        res = run_cli(*args)
        assert res.returncode == 2
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr


def test_bad_yaml(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: [unclosed\n")
    assert main(["train", str(cfg)]) == 2
    cfg.write_text("- a\n- b\n")
    assert main(["train", str(cfg)]) == 2


def test_train_evaluate_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "method=steincd", "max_steps=4", f"out_dir={run}"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["evaluate", str(run)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["step"] == 4 and ev["n"] == 1000
    assert ev["log_likelihood_nats"] == pytest.approx(rec["test_ll"], abs=1e-9)
    out = tmp_path / "s.png"
    assert main(["sample", str(run), "--n", "16", "--steps", "5", "--out", str(out)]) == 0
    img = Image.open(out)
    # 4 x 4 grid of 28 px images with 2 px padding, doubled
    assert img.size == (2 * (4 * 30 + 2), 2 * (4 * 30 + 2))


def test_tampered_checkpoint_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "max_steps=2", f"out_dir={run}"]) == 0
    ck = run / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:100])
    capsys.readouterr()  # training's own lines
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and len(err.strip().splitlines()) == 1


def test_help_has_examples(capsys):
    for cmd in ("train", "evaluate", "sample", "reproduce", "demo"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0 and "examples:" in capsys.readouterr().out


def test_reproduce_fig1a_small(tmp_path):
    from steinebm.reproduction.reproduce_fig1a import fig1a

    out = tmp_path / "fig"
    summary = fig1a(
        out=out,
        dataset="mnist-embedded",
        seeds=2,
        epochs=1,
        sweep=False,
        jobs=1,
        n_train=200,
        methods=["CD-1", "SteinCD"],
        log=lambda s: None,
    )
    assert (out / "fig1a.png").exists() and (out / "fig1a.md").exists()
    assert [r["method"] for r in summary["rows"]] == ["CD-1", "SteinCD"]
    assert all(r["seeds"] == 2 for r in summary["rows"])
    # the B = 0, b = mean reference is a unit Gaussian at the training mean: log N(x; mean, I)
    ds = load_dataset("mnist-embedded")
    mu = ds.train.x.double().mean(0).numpy()
    xt = ds.test.x.double().numpy()
    expect = float(np.mean(-0.5 * ((xt - mu) ** 2).sum(1) - 0.5 * 784 * np.log(2 * np.pi)))
    assert summary["baseline_test_ll"] == pytest.approx(expect, abs=1e-6)
    # the verdict follows the stated rule: held iff the gap exceeds the combined seed spread
    rows = {r["method"]: r for r in summary["rows"]}
    gap = rows["SteinCD"]["final_test_ll_mean"] - rows["CD-1"]["final_test_ll_mean"]
    spread = float(np.hypot(rows["SteinCD"]["final_test_ll_std"], rows["CD-1"]["final_test_ll_std"]))
    expected = "held" if gap > spread else "not held" if gap < -spread else "inconclusive (within the seed spread)"
    assert len(summary["claims"]) == 1 and summary["claims"][0]["verdict"] == expected
    assert Path(out / "summary.json").exists()


def _scores_by_hand(run_dir: Path, n: int, inception_score_by_hand) -> dict[str, float]:
    """A run's generator scored by hand: n images from xi ~ U(-1, 1)^100 (seed 0, drawn here);
    the inception score from the shipped MNIST classifier's logits; the classes it predicts; and,
    with every image centred and scaled to unit length, the mean distance to the nearest other
    image and the share of images with one within 0.2."""
    import math

    import torch

    from steinebm.engine.build import load_generator
    from steinebm.evaluation.classifiers import load_classifier

    xi = torch.rand(n, 100, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        x = load_generator(run_dir)(xi)
        logits = load_classifier("mnist")(x).numpy()
    z = x.reshape(n, -1).double().numpy()
    z = z - z.mean(1, keepdims=True)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    nearest = [min(math.dist(z[i], z[j]) for j in range(n) if j != i) for i in range(n)]
    return {
        "is": inception_score_by_hand(logits),
        "classes": len(set(logits.argmax(1).tolist())),
        "nn": float(np.mean(nearest)),
        "dup": sum(d < 0.2 for d in nearest) / n,
    }


def _rbm_test_ll_by_hand(run_dir: Path, x: np.ndarray) -> float:
    """mean log p(x) of a run's RBM: f(x) = b.x - |x|^2 / 2 + sum_k log 2 cosh(z_k), z = B^T x + c,
    less log Z = (d/2) log 2 pi + log sum_h exp(|b + B h|^2 / 2 + c.h) over all h in {-1, +1}^l."""
    import itertools
    import math

    from steinebm.engine.checkpoint import load_checkpoint

    B, b, c = (load_checkpoint(run_dir)["model"][k].double().numpy() for k in ("B", "b", "c"))
    z = x @ B + c
    f = x @ b - 0.5 * (x * x).sum(1) + np.logaddexp(z, -z).sum(1)
    terms = [
        0.5 * float(np.sum((b + B @ np.array(h)) ** 2)) + float(c @ np.array(h))
        for h in itertools.product((-1.0, 1.0), repeat=len(c))
    ]
    top = max(terms)
    log_z = 0.5 * len(b) * math.log(2 * math.pi) + top + math.log(sum(math.exp(t - top) for t in terms))
    return float(f.mean() - log_z)


def test_reproduce_fig1b_fig1c_small(tmp_path, inception_score_by_hand):
    from steinebm.reproduction.reproduce import fig1b, fig1cd

    out = tmp_path / "fig1b"
    common = dict(dataset="mnist-embedded", epochs=1, n_train=100, is_samples=200, log=lambda s: None)
    summary = fig1b(out=out, alphas=(0.0, 1.0), seeds=1, jobs=1, **common)
    variants = [r["variant"] for r in summary["rows"]]
    assert variants == ["alpha=0", "alpha=1", "no-kernel", "dcgan"]
    x_test = load_dataset("mnist-embedded").test.x.double().numpy()
    for r in summary["rows"]:
        run = out / "runs" / r["variant"] / "seed0"  # one seed: each mean is that run's value
        hand = _scores_by_hand(run, 200, inception_score_by_hand)
        assert r["is_mean"] == pytest.approx(hand["is"], rel=1e-6)
        assert r["classes_mean"] == hand["classes"] and r["dup_mean"] == hand["dup"]
        assert r["nn_mean"] == pytest.approx(hand["nn"], rel=1e-9)
        # the discriminator has no likelihood; every RBM has its exact one
        if r["variant"] == "dcgan":
            assert np.isnan(r["ll_mean"])
        else:
            assert r["ll_mean"] == pytest.approx(_rbm_test_ll_by_hand(run, x_test), rel=1e-6)
    md = (out / "fig1b.md").read_text()
    assert (out / "fig1b.png").exists() and "inception score" in md and "n/a (no likelihood)" in md
    # parameter counts, against the layer shapes written out by hand
    n = summary["parameters"]
    assert n["rbm"] == 784 * 10 + 784 + 10
    g_fc = (100 * 1024 + 1024) + 2 * 1024 + (1024 * 6272 + 6272) + 2 * 6272
    g_deconv = (128 * 64 * 25 + 64) + 2 * 64 + (64 * 1 * 25 + 1)
    assert n["generator"] == g_fc + g_deconv
    assert f"{n['dcgan_discriminator']:,}" in md
    # a published grid: 100 real test digits, tiled by hand into a 280 x 280 PNG
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS, grid_scores, read_grid

    digits = load_dataset("mnist-embedded").test.x[:100].numpy().reshape(10, 10, 28, 28)
    tiles = (digits.transpose(0, 2, 1, 3).reshape(280, 280) * 255).round().astype(np.uint8)
    theirs = tmp_path / "theirs.png"
    Image.fromarray(tiles).save(theirs)
    res = fig1cd("fig1c", out=tmp_path / "fig1c", fig1b_dir=out, authors_grid=theirs, **common)
    assert set(res) == {"SteinGAN", "generator on SteinCD's energy", "authors' grid"}
    md = (tmp_path / "fig1c" / "fig1c.md").read_text()
    for name, r in res.items():
        assert Path(r["grid"]).exists()
        # each row's 100-image scores are those of its picture (read back from the PNG: 8-bit pixels)
        if name == "authors' grid":
            back = grid_scores(read_grid(r["grid"]))
        else:  # our pictures: 2 px padding, each pixel drawn 2 x 2
            back = grid_scores(read_grid(r["grid"], tile=56, pad=4).reshape(100, 56, 56)[:, ::2, ::2].reshape(100, -1))
        for c in MNIST_CLASSIFIERS:
            assert r[f"grid_{c}_is"] == pytest.approx(back[f"grid_{c}_is"], rel=0.02), (name, c)
            assert f"{r[f'grid_{c}_is']:.2f} ({r[f'grid_{c}_classes']:.0f})" in md
    assert res["authors' grid"]["grid_mnist-lenet_classes"] == 10  # real digits: every class


@pytest.mark.parametrize("figure", ["fig1a", "fig1b", "fig2"])
def test_authors_grid_is_refused_where_no_grid_is_scored(tmp_path, capsys, figure):
    out = tmp_path / "out"
    assert main(["reproduce", figure, "--authors-grid", "x.png", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--authors-grid" in err[0] and not out.exists()


def test_an_unreadable_authors_grid_is_one_line_before_any_run(tmp_path, capsys):
    bad = tmp_path / "grid.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "fig1c"
    args = ["reproduce", "fig1c", "--dataset", "mnist-embedded", "--authors-grid", str(bad), "--out", str(out)]
    assert main([*args, "--fig1b-dir", str(tmp_path / "fig1b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grid.png" in err[0] and not out.exists() and not (tmp_path / "fig1b").exists()


def test_reproduce_fig1c_length_small(tmp_path, capsys):
    from steinebm.reproduction.reproduce_fig1c import fig1c_length

    out = tmp_path / "len"
    common = dict(dataset="mnist-embedded", epochs=2, n_train=200, eval_samples=100, jobs=1, log=lambda s: None)
    summary = fig1c_length(out=out, **common)
    assert set(summary["runs"]) == {"default", "authors' recipe"}
    x_test = load_dataset("mnist-embedded").test.x.double().numpy()
    md = (out / "fig1c-length.md").read_text()
    for name, run in summary["runs"].items():
        assert [r["epoch"] for r in run["evals"]] == [1.0, 2.0]
        # the last epoch's exact likelihood, by hand from the run's RBM
        assert run["evals"][-1]["test_ll"] == pytest.approx(
            _rbm_test_ll_by_hand(Path(run["out_dir"]), x_test), rel=1e-6
        )
        assert f"| 2 | {run['evals'][-1]['test_ll']:.2f} |" in md
        assert (Path(run["out_dir"]) / "config.yaml").read_text().count("gen_bias: false") == (name != "default")
        lls = [r["test_ll"] for r in run["evals"]]  # the last (here: both) epochs' mean and spread
        assert run["last_epochs_mean_std"]["test_ll"] == pytest.approx((np.mean(lls), np.std(lls)))
        assert f"| 1-2, mean ± sd | {np.mean(lls):.2f} ± {np.std(lls):.2f} |" in md
    assert (out / "fig1c-length.png").exists()
    assert all(run["grid_matches_authors_at"] is None for run in summary["runs"].values())  # no grid given
    for name in summary["runs"]:  # each run's last grid, 10 x 10 tiles of 28 px drawn 2 x, no padding
        assert Image.open(out / f"grid-{name.replace(' ', '-').replace(chr(39), '')}.png").size == (560, 560)
        assert f"![{name}](grid-" in md
    # a second call finds the runs done and only redraws
    stamp = (out / "default" / "checkpoint.pt").stat().st_mtime_ns
    assert fig1c_length(out=out, **common)["runs"]["default"]["evals"] == summary["runs"]["default"]["evals"]
    assert (out / "default" / "checkpoint.pt").stat().st_mtime_ns == stamp
    # --no-train with a longer length: the runs are read as far as they are, and not trained on
    longer = {**common, "epochs": 3}
    part = fig1c_length(out=out, train=False, **longer)
    assert part["runs"]["default"]["evals"] == summary["runs"]["default"]["evals"]
    assert (out / "default" / "checkpoint.pt").stat().st_mtime_ns == stamp
    said = (out / "fig1c-length.md").read_text()
    assert "as far as the runs are trained: default to epoch 2, authors' recipe to epoch 2." in said
    assert fig1c_length(out=tmp_path / "none", train=False, **longer)["runs"] == {}
    assert "no run has an evaluated epoch yet" in (tmp_path / "none" / "fig1c-length.md").read_text()
    assert not (tmp_path / "none" / "default").exists()


def test_reproduce_fig1c_ablation_switches_back_one_difference_per_row(tmp_path):
    import yaml

    from steinebm.naming import slug
    from steinebm.reproduction.reproduce_fig1c import RECIPE_ABLATIONS, fig1c_ablation

    out = tmp_path / "abl"
    digits = load_dataset("mnist-embedded").test.x[:100].numpy().reshape(10, 10, 28, 28)
    theirs_tiles = (digits.transpose(0, 2, 1, 3).reshape(280, 280) * 255).round().astype(np.uint8)
    Image.fromarray(theirs_tiles).save(tmp_path / "theirs.png")
    common = dict(
        dataset="mnist-embedded",
        epochs=1,
        n_train=200,
        is_samples=100,
        jobs=1,
        log=lambda s: None,
        authors_grid=tmp_path / "theirs.png",
    )
    summary = fig1c_ablation(out=out, seeds=2, ablation_seeds=1, **common)
    rows = summary["rows"]
    assert list(rows) == ["the authors' recipe", *RECIPE_ABLATIONS]
    assert len(rows["the authors' recipe"]["seeds"]) == 2

    def saved(run: Path) -> dict:
        return yaml.safe_load("\n".join((run / "config.yaml").read_text().splitlines()[1:]))

    recipe = saved(Path(rows["the authors' recipe"]["seeds"][0]["out_dir"]))
    x_test = load_dataset("mnist-embedded").test.x.double().numpy()
    for label, row in rows.items():
        run = Path(row["seeds"][0]["out_dir"])
        cfg = saved(run)
        differ = {k for k in cfg if k != "out_dir" and cfg[k] != recipe.get(k)}
        assert differ == set(row["change"]), label  # exactly the row's settings, nothing else
        assert all(cfg[k] == v for k, v in row["change"].items())
        assert row["seeds"][0]["test_ll"] == pytest.approx(_rbm_test_ll_by_hand(run, x_test), rel=1e-6)
    lls = [s["test_ll"] for s in rows["the authors' recipe"]["seeds"]]
    assert rows["the authors' recipe"]["mean_std"]["test_ll"] == pytest.approx((np.mean(lls), np.std(lls)))
    assert "| the authors' recipe | 2 |" in (out / "fig1c-ablation.md").read_text()
    one = rows["phi divided by m"]["seeds"][0]["test_ll"]  # a row of one seed: its value, no spread
    assert f"| phi divided by m | 1 | {one:.2f} |" in (out / "fig1c-ablation.md").read_text()
    # the pictures: each row's seed-0 grid (the 100 images its grid score is of) and the authors',
    # tiled by hand without padding and drawn 2 x 2 per pixel
    from steinebm.engine.build import load_generator
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS, grid_scores, read_grid

    def drawn(tiles: np.ndarray) -> np.ndarray:
        return np.kron(tiles, np.ones((2, 2), np.uint8))

    md_text = (out / "fig1c-ablation.md").read_text()
    assert np.array_equal(np.asarray(Image.open(out / "authors-grid.png")), drawn(theirs_tiles))
    assert "![the authors' grid](authors-grid.png)" in md_text
    for label, row in rows.items():
        picture = out / f"grid-{slug(label)}.png"
        assert f"![{label}]({picture.name})" in md_text
        torch.manual_seed(123)  # the draw must not depend on the global stream
        with torch.no_grad():
            G = load_generator(row["seeds"][0]["out_dir"])
            xi = torch.rand(100, G.noise_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
            x = G(xi).reshape(10, 10, 28, 28).clamp(0, 1).numpy()
        ours = (x.transpose(0, 2, 1, 3).reshape(280, 280) * 255).round().astype(np.uint8)
        back = np.asarray(Image.open(picture))
        assert np.abs(back.astype(int) - drawn(ours).astype(int)).max() <= 1, label
        scores = grid_scores(read_grid(picture, tile=56).reshape(100, 56, 56)[:, ::2, ::2].reshape(100, -1))
        for c in MNIST_CLASSIFIERS:
            assert scores[f"grid_{c}_is"] == pytest.approx(row["seeds"][0][f"grid_{c}_is"], abs=0.02), label

    # --no-train: a third recipe seed is listed as not trained, and nothing is trained for it
    partial = fig1c_ablation(out=out, seeds=3, ablation_seeds=1, train=False, **common)["rows"]
    third = partial["the authors' recipe"]["seeds"][2]
    assert third.get("not_finished") and not Path(third["out_dir"]).exists()
    assert partial["the authors' recipe"]["seeds"][:2] == rows["the authors' recipe"]["seeds"]
    assert partial["the authors' recipe"]["mean_std"]["test_ll"] == pytest.approx((np.mean(lls), np.std(lls)))
    page_text = (out / "fig1c-ablation.md").read_text()
    assert "| the authors' recipe | 2 of 3 |" in page_text
    assert "1 of the 10 runs are not finished" in page_text
    assert main(["reproduce", "fig1b", "--no-train", "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("flag", ["--transfer-epochs", "--transfer-images", "--fid-samples"])
def test_mnist_joint_refuses_a_zero_count_before_any_run(tmp_path, capsys, flag):
    out = tmp_path / "joint"
    assert main(["reproduce", "mnist-joint", flag, "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and not out.exists()


def test_reproduce_hais_puts_the_exact_likelihood_beside_their_estimator(tmp_path, capsys):
    from steinebm.engine.build import load
    from steinebm.evaluation.likelihood import log_likelihood
    from steinebm.reproduction.reproduce_hais import hais_table

    run = tmp_path / "rbm"
    assert main(["train", *SMALL, "method=steincd", "n_hidden=3", "max_steps=5", f"out_dir={run}"]) == 0
    capsys.readouterr()
    x_test = load_dataset("mnist-embedded").test.x
    summary = hais_table([run], out=tmp_path / "hais", steps=(20, 60), groups=3, chains=4, log=lambda s: None)
    (row,) = summary["rows"]
    assert row["exact"] == pytest.approx(_rbm_test_ll_by_hand(run, x_test.double().numpy()), rel=1e-6)
    for n in (20, 60):  # each estimate is the estimator's own, with the chains seeded as given
        direct = log_likelihood(load(run), x_test, "hais", 4, n, torch.Generator().manual_seed(0), 3)
        assert row["hais"][str(n)]["ll"] == pytest.approx(direct.value, rel=1e-9)
        assert row["hais"][str(n)]["stderr"] == pytest.approx(direct.stderr, rel=1e-9)
    md = (tmp_path / "hais" / "hais.md").read_text()
    assert f"{row['exact']:.2f}" in md and "-771.2" in md
    cache = run / "hais-60x3x4-seed0.json"
    stamp = cache.stat().st_mtime_ns
    hais_table([run], out=tmp_path / "hais", steps=(60,), groups=3, chains=4, log=lambda s: None)
    assert cache.stat().st_mtime_ns == stamp  # kept, not recomputed
    # a run without an RBM is refused in one line, before any estimate
    dc = tmp_path / "dcgan"
    assert main(["train", *SMALL, "method=dcgan", "max_steps=2", f"out_dir={dc}"]) == 0
    capsys.readouterr()
    assert main(["reproduce", "hais", "--runs", f"{run},{dc}", "--out", str(tmp_path / "h2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no RBM" in err[0] and not (tmp_path / "h2").exists()


def test_mnist_joint_refuses_more_fid_or_training_images_than_it_draws(tmp_path, capsys):
    out = tmp_path / "joint"
    assert main(["reproduce", "mnist-joint", "--is-samples", "1000", "--fid-samples", "2000", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fid-samples" in err[0] and not out.exists()


def test_reproduce_hais_refuses_an_rbm_too_large_to_enumerate(tmp_path, capsys):
    run = tmp_path / "big"
    args = [a for a in SMALL if not a.startswith("n_hidden")]
    assert main(["train", *args, "method=cd", "n_hidden=25", "max_steps=1", "eval_every=0", f"out_dir={run}"]) == 0
    capsys.readouterr()
    assert main(["reproduce", "hais", "--runs", str(run), "--out", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "25 hidden units" in err[0] and not (tmp_path / "h").exists()


def test_evaluate_and_sample_read_the_checkpoint_once(tmp_path, monkeypatch, capsys):
    """Each command reads the run's checkpoint file once (a large generator's checkpoint with its
    optimizer state is tens of MB), however many parts it builds from it."""
    from steinebm.cli import main

    run = tmp_path / "gan"
    args = ["train", "method=steingan", "dataset=mnist-embedded", "n_train=40", "batch_size=10", "n_hidden=3"]
    assert main([*args, "max_steps=1", "progress=false", f"out_dir={run}"]) == 0
    reads = []
    real_load = torch.load

    def counting_load(*a, **k):
        reads.append(1)
        return real_load(*a, **k)

    monkeypatch.setattr(torch, "load", counting_load)
    for cmd in (["evaluate", str(run)], ["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]):
        reads.clear()
        assert main(cmd) == 0
        assert len(reads) == 1, (cmd[0], len(reads))
    capsys.readouterr()


def test_a_step_or_config_is_read_without_the_weights(tmp_path, monkeypatch, capsys):
    """checkpoint_header reads a checkpoint's step and config and no tensor: it answers where the
    weights are damaged (their bytes are never read, let alone checked), while every loader
    refuses that file; and a generator's cached scores are reused without a full read."""
    from steinebm.cli import main
    from steinebm.engine.checkpoint import checkpoint_header, checkpoint_step, content_digest, load_checkpoint
    from steinebm.errors import UserError
    from steinebm.reproduction.reproduce import cached_generator_scores

    run = tmp_path / "gan"
    args = ["train", "method=steingan", "dataset=mnist-embedded", "n_train=40", "batch_size=10", "n_hidden=3"]
    assert main([*args, "max_steps=3", "progress=false", f"out_dir={run}"]) == 0
    capsys.readouterr()
    full = load_checkpoint(run)
    header = checkpoint_header(run)
    assert header["step"] == full["step"] == 3 and header["config"] == full["config"]
    assert set(header) == {"version", "digest", "step", "config", "rollbacks", "elapsed", "dim", "image_shape"}
    assert header["digest"] == content_digest(full)  # the digest of the content, recomputed
    real_load = torch.load

    def without_mmap(*a, **k):
        if k.get("mmap"):
            raise RuntimeError("no mapped reads here")
        return real_load(*a, **k)

    monkeypatch.setattr(torch, "load", without_mmap)
    assert checkpoint_header(run) == header  # the full read's header, digest included
    monkeypatch.setattr(torch, "load", real_load)

    # the scores are computed once (a full read), then reused with no full read
    sc = cached_generator_scores(run, 20)
    assert sc["step"] == 3
    loads = []

    def recording_load(*a, **k):
        loads.append(bool(k.get("mmap")))
        return real_load(*a, **k)

    monkeypatch.setattr(torch, "load", recording_load)
    assert cached_generator_scores(run, 20) == sc
    assert loads == [True]  # one mapped read of the index, none of the weights
    monkeypatch.setattr(torch, "load", real_load)

    # flip bytes inside the generator's first weight: the header still reads, the loaders refuse
    data = bytearray((run / "checkpoint.pt").read_bytes())
    w = full["generator"][next(iter(full["generator"]))].contiguous().numpy().tobytes()
    at = bytes(data).find(w[:64])
    assert at > 0
    data[at + 8 : at + 12] = b"\xff\xff\xff\x7f"
    (run / "checkpoint.pt").write_bytes(bytes(data))
    assert checkpoint_step(run) == 3
    with pytest.raises(UserError, match="damaged"):
        load_checkpoint(run)


@pytest.mark.parametrize("saved", [True, False])
def test_a_stopped_run_names_its_folder_or_says_it_saved_nothing(tmp_path, monkeypatch, capsys, saved):
    import steinebm.engine.train as engine_train
    from steinebm.cli import main

    run = tmp_path / "run"

    def stopped(cfg, resume=False, **kw):
        if saved:  # stopped after its first checkpoint
            Path(cfg.out_dir).mkdir(parents=True)
            (Path(cfg.out_dir) / "checkpoint.pt").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_train, "train", stopped)
    assert main(["train", "demo-cd1", f"out_dir={run}"]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    if saved:
        assert last == f"steinebm: interrupted; the last checkpoint is kept (continue: steinebm resume {run})"
    else:
        assert last == "steinebm: interrupted; the run saved no checkpoint yet (start it again)"
