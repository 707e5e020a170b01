"""What a new user met: damaged checkpoints, finite blow-ups, run folders that are not runs,
copied runs, probes a kill left behind, and the messages around them. Each test provokes the
fault for real (bytes flipped in a file, a folder prepared by hand, a kill's leftover planted)."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from steinebm.cli import main
from steinebm.data import load_dataset
from steinebm.engine import build as B
from steinebm.engine import checkpoint as C
from steinebm.engine import evaluate as evaluate_module
from steinebm.engine import guard
from steinebm.engine import train as T
from steinebm.engine.config import Config
from steinebm.errors import DivergenceError, UserError

SMALL = dict(dataset="mnist-embedded", n_train=300, batch_size=50, n_hidden=3, progress=False, threads=1)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist-embedded")


def _cfg(tmp_path: Path, name: str, **kw) -> Config:
    return Config(**{**SMALL, "out_dir": str(tmp_path / name), **kw})


def _args(run: Path, **kw) -> list[str]:
    return [f"{k}={v}" for k, v in {**SMALL, **kw}.items()] + [f"out_dir={run}"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _offset_of(blob: bytes, t: torch.Tensor) -> int:
    """Where a tensor's raw bytes sit in a checkpoint file (torch stores them uncompressed)."""
    raw = t.detach().contiguous().numpy().tobytes()
    at = blob.find(raw)
    assert at >= 0 and blob.find(raw, at + 1) < 0, "the tensor's bytes must occur once"
    return at


def _flip(path: Path, offsets: list[int], mask: int = 0x40) -> None:
    blob = bytearray(path.read_bytes())
    for o in offsets:
        blob[o] ^= mask
    path.write_bytes(bytes(blob))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("steinebm:")]
    assert len(lines) == 1, err
    return lines[0]


# --- the content digest -------------------------------------------------------------------------


def test_digest_is_sha256_of_a_canonical_walk_computed_by_hand():
    t = torch.tensor([1.5, -2.0])
    h = hashlib.sha256()
    h.update(b"D2")
    h.update(b"'a'")
    h.update(b"Ttorch.float32(2,)")
    h.update(np.array([1.5, -2.0], dtype=np.float32).tobytes())
    h.update(b"'n'")
    h.update(b"Vint:3;")
    assert C.content_digest({"n": 3, "a": t}) == h.hexdigest()
    assert C.content_digest({"n": 3, "a": t}) != C.content_digest({"n": 3, "a": t + 0.0 * t - 0.5})


@pytest.mark.parametrize("where", ["optimizer", "B-exponents"])
def test_damaged_tensor_bytes_are_refused_by_every_reader(tmp_path, data, capsys, where):
    """Four bytes flipped inside the optimizer state, or the exponent bytes of two entries of B:
    before, both loaded without complaint (one printed a log-likelihood of -1e74)."""
    run = tmp_path / "run"
    assert main(["train", *_args(run, method="steingan", noise_dim=8, max_steps=3, n_hidden=3)]) == 0
    ck_file = run / C.CHECKPOINT
    ck = torch.load(ck_file, weights_only=True)
    blob = ck_file.read_bytes()
    if where == "optimizer":
        at = _offset_of(blob, ck["optimizer"]["state"][0]["exp_avg"])
        _flip(ck_file, [at + 4, at + 5, at + 6, at + 7])
    else:  # float32 little-endian: byte 3 holds the sign and the high exponent bits
        at = _offset_of(blob, ck["model"]["B"])
        _flip(ck_file, [at + 3, at + 4 * 7 + 3])
    capsys.readouterr()
    for argv in (
        ["evaluate", str(run)],
        ["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")],
        ["report", str(run), "--out", str(tmp_path / "r.html")],
        ["resume", str(run)],  # falls back to the step-0 checkpoint kept as the previous one
    ):
        code = main(argv)
        err = capsys.readouterr().err
        if argv[0] == "resume" and code == 0:
            assert "resuming from checkpoint-previous.pt" in err
            continue
        assert code == 2, (argv, err)
        assert "is damaged" in _one_error_line(err), err
    assert not (tmp_path / "s.png").exists()


def test_damaged_checkpoint_refused_by_the_python_loaders(tmp_path, data):
    cfg = _cfg(tmp_path, "g", method="steingan", noise_dim=8, max_steps=2)
    T.train(cfg, dataset=data)
    ck_file = Path(cfg.out_dir) / C.CHECKPOINT
    at = _offset_of(ck_file.read_bytes(), torch.load(ck_file, weights_only=True)["generator"]["fc.0.weight"])
    _flip(ck_file, [at + 10])
    for load in (B.load, B.load_generator, T.load_checkpoint):
        with pytest.raises(UserError, match="is damaged"):
            load(cfg.out_dir)


def test_resume_falls_back_to_the_previous_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path, data, capsys):
    kw = dict(method="steincd", checkpoint_every=2, max_steps=8, eval_every=0)
    ref = _cfg(tmp_path, "ref", **kw)
    T.train(ref, dataset=data)
    run = tmp_path / "run"
    assert main(["train", *_args(run, **{**kw, "max_steps": 6})]) == 0
    prev = torch.load(run / C.PREVIOUS, weights_only=True)
    assert prev["step"] == 4  # the checkpoint before the latest (step 6) is kept
    ck_file = run / C.CHECKPOINT
    at = _offset_of(ck_file.read_bytes(), torch.load(ck_file, weights_only=True)["model"]["B"])
    _flip(ck_file, [at + 3])
    damaged = ck_file.read_bytes()
    capsys.readouterr()
    assert main(["resume", str(run), "max_steps=8"]) == 0
    err = capsys.readouterr().err
    line = _one_error_line(err)
    assert "is damaged" in line and "resuming from checkpoint-previous.pt at step 4" in line
    assert (run / "checkpoint-damaged.pt").read_bytes() == damaged  # kept for inspection, not lost
    a, b = T.load_checkpoint(run), T.load_checkpoint(ref.out_dir)
    for name in ("model", "optimizer", "rng"):
        assert C.content_digest(a[name]) == C.content_digest(b[name])
    assert a["step"] == 8


def test_a_garbled_write_never_replaces_a_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / C.CHECKPOINT
    C.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    good = path.read_bytes()
    real_save = torch.save

    def garbling_save(obj, fh, *a, **k):
        buf = io.BytesIO()
        real_save(obj, buf, *a, **k)
        raw = bytearray(buf.getvalue())
        at = bytes(raw).find(np.full(3, 2.0, np.float32).tobytes())
        raw[at] ^= 1  # the disk returns something else than was written
        fh.write(bytes(raw))

    monkeypatch.setattr(torch, "save", garbling_save)
    with pytest.raises(OSError, match="does not read back as written"):
        C.save_checkpoint({"step": 2, "w": torch.full((3,), 2.0)}, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [C.CHECKPOINT]


def test_code_running_pickle_gives_our_own_line_and_never_suggests_the_unsafe_loader(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"version": 2, "model": Evil(), "config": {}}, tmp_path / "evil.pt")
    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"model": Evil()}))
    for name in ("evil.pt", "raw.pt"):
        capsys.readouterr()
        assert main(["evaluate", str(tmp_path / name)]) == 2
        out = capsys.readouterr()
        line = _one_error_line(out.err)
        assert out.err.strip() == line  # no UserWarning lines before it
        assert "is not a steinebm checkpoint and was not loaded" in line
        assert "weights_only" not in line
    assert not marker.exists()


# --- probes and temps a kill leaves -------------------------------------------------------------


def test_resume_removes_a_probe_and_temps_a_kill_left_but_nothing_else(tmp_path, data):
    cfg = _cfg(tmp_path, "run", max_steps=2)
    T.train(cfg, dataset=data)
    run = Path(cfg.out_dir)
    left = [".steinebm-probe-k1ll3d.tmp", "checkpoint.ptabc123.tmp", "checkpoint-previous.ptxyz.tmp"]
    for name in left:
        (run / name).write_bytes(b"\0" * 100)
    (run / "user-data.tmp").write_text("mine")  # not a name steinebm makes
    cfg.max_steps = 4
    T.train(cfg, resume=True, dataset=data)
    assert not any((run / name).exists() for name in left)
    assert (run / "user-data.tmp").read_text() == "mine"


def test_a_folder_another_process_trains_is_refused_and_left_as_it_is(tmp_path, data, capsys):
    """Two trainings of one folder at once would overwrite each other's checkpoints, and the
    second's start would remove the temp files the first is writing: the second is refused in one
    line, with exit status 2, and the folder is left byte for byte; once the first has ended (its
    lock goes with it), the same command trains."""
    import fcntl
    import os

    cfg = _cfg(tmp_path, "run", max_steps=2)
    T.train(cfg, dataset=data)
    run = Path(cfg.out_dir)
    (run / "checkpoint.ptabc123.tmp").write_bytes(b"\0" * 100)  # the other process's write under way
    before = _tree(run)
    other = os.open(run, os.O_RDONLY)  # another open of the folder, as another process makes
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code = main(["train", *_args(run, max_steps=4), "--resume"])
        line = _one_error_line(capsys.readouterr().err)
        assert code == 2 and f"{run} is being trained by another process now" in line
        assert _tree(run) == before
    finally:
        os.close(other)  # the other training ends
    assert main(["train", *_args(run, max_steps=4), "--resume"]) == 0
    assert C.checkpoint_step(run) == 4 and not (run / "checkpoint.ptabc123.tmp").exists()
    probe = os.open(run, os.O_RDONLY)  # the finished training holds the folder no longer
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(probe)


# --- a blow-up without a NaN --------------------------------------------------------------------


def test_finite_blow_up_is_caught_as_divergence(tmp_path, capsys):
    """lr=1e6, SteinCD, 300 steps: before, exit 0 and a test log-likelihood of -1e16."""
    run = tmp_path / "boom"
    code = main(["train", *_args(run, method="steincd", lr=1e6, max_steps=300, n_train=2500)])
    err = capsys.readouterr().err
    assert code == 3
    line = _one_error_line(err)
    assert "parameter norm grew" in line and f"the last good checkpoint is {run / C.CHECKPOINT} (step 0)" in line
    # the checkpoint left is the good one: its model is the untrained one
    untrained = T.build_parts(Config(**SMALL), 784, torch.device("cpu")).modules["model"]
    assert torch.equal(T.load_checkpoint(run)["model"]["B"], untrained.B.detach())


def test_finite_blow_up_rolls_back_with_on_divergence_rollback(tmp_path, data):
    cfg = _cfg(tmp_path, "rb", method="steincd", lr=1e6, max_steps=40, on_divergence="rollback", max_rollbacks=2)
    with pytest.raises(DivergenceError, match="after 2 rollbacks"):
        T.train(cfg, dataset=data)
    rollbacks = [r for r in T.read_metrics(cfg.out_dir) if "rollback" in r]
    assert [r["lr"] for r in rollbacks] == [1e6 * 0.5, 1e6 * 0.25]
    assert all("parameter norm grew" in r["reason"] for r in rollbacks)


def test_growth_check_by_hand():
    """The criterion against norms computed with a loop."""
    model = torch.nn.Linear(3, 2)
    init = guard.norms({"model": model})
    by_hand = sum(float(p.detach().pow(2).sum()) for p in model.parameters()) ** 0.5
    assert float(init["model"]) == pytest.approx(by_hand, rel=1e-6)
    with torch.no_grad():  # to 999 times the yardstick max(initial norm, 1)
        for p in model.parameters():
            p.mul_(999.0 * max(by_hand, 1.0) / by_hand)
    guard.check_growth({"model": model}, init, 1000.0)  # 999x: still normal
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.002)
    with pytest.raises(DivergenceError, match="grew to 1e\\+03 times"):
        guard.check_growth({"model": model}, init, 1000.0)


@pytest.mark.parametrize(
    "config", sorted(p.name for p in (Path(__file__).parents[1] / "configs").glob("*.yaml") if "fig1" in p.name)
)
def test_shipped_mnist_configs_stay_far_below_the_growth_limit(tmp_path, data, config):
    """Each shipped MNIST config, on the embedded subset for 2 epochs: its parameters grow by a
    small factor, far from the 1000 that marks a blow-up (the image configs' networks are
    checked in the same way in tests/test_image_training.py's runs, which must not diverge)."""
    root = Path(__file__).parents[1] / "configs"
    from steinebm.engine.config_file import load_config

    cfg = load_config(root / config, [f"{k}={v}" for k, v in SMALL.items()] + [f"out_dir={tmp_path / 'r'}"])
    cfg.epochs, cfg.n_train, cfg.eval_every, cfg.n_hidden = 2, 1000, 0, 10
    T.train(cfg, dataset=data)
    ck = T.load_checkpoint(cfg.out_dir)
    parts = T.build_parts(cfg, 784, torch.device("cpu"))
    init = guard.norms(parts.modules)
    for name, mod in parts.modules.items():
        mod.load_state_dict(ck[name])
    now = guard.norms(parts.modules)
    for name in init:
        assert float(now[name]) / max(float(init[name]), 1.0) < 10.0, name


# --- run folders --------------------------------------------------------------------------------


def test_a_users_folder_is_refused_and_left_untouched(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("my: own\n")
    (folder / "metrics.jsonl").write_text('{"step": 1, "mine": true}\n')
    (folder / "notes.md").write_text("notes")
    before = _tree(folder)
    assert main(["train", *_args(folder, max_steps=2)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is not empty and is not a steinebm run" in line and "config.yaml" in line
    assert _tree(folder) == before


def test_a_copied_run_resumes_where_it_now_is(tmp_path, data, capsys):
    orig = tmp_path / "orig"
    assert main(["train", *_args(orig, max_steps=2)]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy)
    before = _tree(orig)
    assert main(["train", str(copy / "config.yaml"), "max_steps=4", "--resume"]) == 0
    assert _tree(orig) == before  # the original was not touched
    assert T.load_checkpoint(copy)["step"] == 4
    moved = tmp_path / "moved"
    copy.rename(moved)
    assert main(["resume", str(moved), "max_steps=6"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["out_dir"] == str(moved) and T.load_checkpoint(moved)["step"] == 6
    assert main(["resume", str(moved), "lr=0.1"]) == 2  # not a resumable change: another run


def test_a_failed_start_creates_nothing(tmp_path, capsys):
    run = tmp_path / "a" / "b" / "run"
    data_dir = tmp_path / "typo"
    data_dir.mkdir()
    code = main(["train", "dataset=mnist", f"out_dir={run}", "--data-dir", str(data_dir)])
    assert code == 2
    assert not (tmp_path / "a").exists()
    assert list(data_dir.iterdir()) == []  # no empty mnist/ made inside the mistyped folder


# --- messages -----------------------------------------------------------------------------------


def test_foreign_key_names_suggest_ours(capsys):
    assert main(["train", "learning_rate=0.1"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "did you mean 'lr'?" in line and "epsilon" not in line


def test_a_bad_flag_is_named_alone(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "lr=0.1", "seed=2", "--bogus-flag"])
    assert e.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "unrecognized argument: --bogus-flag" in line and "lr=0.1" not in line and "seed=2" not in line


def test_progress_false_prints_a_line_per_evaluation_and_time_spans_resumes(tmp_path, data, capsys, monkeypatch):
    clock = iter(range(0, 10**6, 7))  # a clock that advances 7 s per reading
    monkeypatch.setattr(T.time, "time", lambda: float(next(clock)))
    cfg = _cfg(tmp_path, "p", epochs=3, n_train=200)
    first = T.train(cfg, dataset=data)
    err = capsys.readouterr().err.splitlines()
    epochs = [ln.split(":")[1].split(",")[0].strip() for ln in err]
    assert epochs == ["epoch 0/3", "epoch 1/3", "epoch 2/3", "epoch 3/3"]
    elapsed = T.load_checkpoint(cfg.out_dir)["elapsed"]
    assert elapsed >= first["time"]
    cfg.epochs = 4
    last = T.train(cfg, resume=True, dataset=data)
    assert last["time"] > elapsed  # the whole run's time, not the last segment's


# --- generators live where they draw ------------------------------------------------------------


def test_every_generator_handed_to_a_draw_is_made_for_the_training_device(tmp_path, data, monkeypatch):
    """The AIS evaluation (n_hidden > 24) once drew on the model's device with a generator made
    for the CPU: on a GPU the first evaluation fails. Each generator the loop hands to a draw on
    the device must be made with that device named."""
    made: dict[int, object] = {}
    real = torch.Generator

    def recording(*args, **kwargs):
        g = real(*args, **kwargs)
        made[id(g)] = kwargs.get("device", args[0] if args else None)
        return g

    monkeypatch.setattr(torch, "Generator", recording)
    seen = []
    real_ais = evaluate_module.ais_log_partition

    def ais(model, *a, generator=None, **k):
        seen.append(made.get(id(generator)))
        return real_ais(model, *a, generator=generator, **k)

    monkeypatch.setattr(evaluate_module, "ais_log_partition", ais)
    learner_rngs = []
    real_step = T.build_parts

    def parts(*a, **k):
        p = real_step(*a, **k)
        step = p.step

        def wrapped(x, rng, y=None):
            learner_rngs.append(made.get(id(rng)))
            return step(x, rng, y)

        p.step = wrapped
        return p

    monkeypatch.setattr(T, "build_parts", parts)
    T.train(_cfg(tmp_path, "ais", n_hidden=25, max_steps=2), dataset=data)
    assert seen and all(torch.device(d) == torch.device("cpu") for d in seen if d is not None)
    assert None not in seen and None not in learner_rngs and learner_rngs


def test_cli_progress_false_subprocess_prints_lines(tmp_path):
    """Through the real command: one line per evaluation on stderr while the run goes on."""
    run = tmp_path / "r"
    res = subprocess.run(
        [sys.executable, "-m", "steinebm.cli", "train", *_args(run, epochs=2, n_train=100)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert len([ln for ln in res.stderr.splitlines() if " epoch " in ln]) == 3


def test_reproduce_fig2_refuses_a_dataset_it_would_ignore(capsys):
    assert main(["reproduce", "fig2", "--dataset", "fashion-mnist"]) == 2
    assert "CIFAR-10 only" in _one_error_line(capsys.readouterr().err)


def test_conditional_models_refuse_labels_beyond_their_classes(tmp_path):
    from steinebm.data import Dataset, Split

    g = torch.Generator().manual_seed(0)

    def split(n: int, top: int) -> Split:
        return Split(torch.rand(n, 784, generator=g), torch.randint(0, top, (n,), generator=g))

    data = Dataset("idx", split(100, 13), split(20, 13), split(20, 13), (1, 28, 28), "memory")
    for kw in (dict(method="steingan", model="joint"), dict(method="dcgan", conditional=True)):
        with pytest.raises(UserError, match="labels go up to 12"):
            T.train(_cfg(tmp_path, f"c{len(kw)}", max_steps=1, **kw), dataset=data)
        assert not (tmp_path / f"c{len(kw)}").exists()  # nothing left behind


def test_a_damaged_log_stops_a_resume_in_one_line_and_the_report_alike(tmp_path, capsys):
    """One reader of run logs: training, reproduction and the report drop a partial last line
    and refuse any other damage the same way."""
    run = tmp_path / "run"
    args = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in SMALL.items()]
    assert main(["train", *args, "method=cd", "max_steps=6", "log_every=2", f"out_dir={run}"]) == 0
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n" + lines[1] + "\n" + '{"step": 3, "loss": 0.5' + "\n" + "\n".join(lines[2:]) + "\n")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    for argv in (["resume", str(run), "max_steps=8"], ["report", str(run), "--out", str(tmp_path / "r.html")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "metrics.jsonl is damaged at line 3" in err[0], err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # a partial last line (a kill mid-write) is no damage: it is dropped
    log.write_text("\n".join(lines) + "\n" + '{"step": 7, "lo')
    assert [r["step"] for r in T.read_metrics(run)] == [json.loads(ln)["step"] for ln in lines]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_the_guards_finiteness_check_agrees_with_a_loop_over_every_entry(dtype):
    import math

    gen = torch.Generator().manual_seed(7)
    for trial in range(60):
        nets = {"a": torch.nn.Linear(5, 4), "b": torch.nn.Conv2d(2, 3, 3), "c": torch.nn.Module()}
        nets["c"].empty = torch.nn.Parameter(torch.empty(0))  # nothing to check in it
        for net in nets.values():
            net.to(dtype)
        params = [p for net in nets.values() for p in net.parameters() if p.numel()]
        with torch.no_grad():
            for _ in range(trial % 3):  # 0, 1 or 2 bad entries, anywhere, of any kind
                p = params[int(torch.randint(len(params), (), generator=gen))]
                k = int(torch.randint(p.numel(), (), generator=gen))
                p.view(-1)[k] = [float("nan"), float("inf"), float("-inf")][int(torch.randint(3, (), generator=gen))]
            if trial % 7 == 0:  # huge but finite entries are finite
                params[0].view(-1)[0] = torch.finfo(dtype).max
        by_loop = all(math.isfinite(float(v)) for p in params for v in p.detach().reshape(-1).tolist())
        assert bool(guard.all_finite(nets)) == by_loop, trial
    assert bool(guard.all_finite({}))
    z = torch.nn.Module()  # a complex parameter: each part of each entry counts
    z.w = torch.nn.Parameter(torch.tensor([1 + 2j, -3j]))
    assert bool(guard.all_finite({"z": z}))
    with torch.no_grad():
        z.w[1] = complex(0.0, float("inf"))
    assert not bool(guard.all_finite({"z": z}))
