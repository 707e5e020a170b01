import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from steinebm import train as T
from steinebm.config import ENERGY_METHODS, Config
from steinebm.data import load_dataset
from steinebm.errors import DivergenceError, UserError
from steinebm.learners import SteinCD

SMALL = dict(dataset="mnist-embedded", n_train=600, batch_size=50, progress=False, n_hidden=4)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist-embedded")


def _cfg(tmp_path: Path, name: str, **kw) -> Config:
    return Config(**{**SMALL, "out_dir": str(tmp_path / name), **kw})


def _params(run_dir) -> dict[str, torch.Tensor]:
    return T.load_checkpoint(run_dir)["model"]


@pytest.mark.parametrize("method", ENERGY_METHODS)
def test_every_method_trains_two_steps(tmp_path, data, method):
    cfg = _cfg(tmp_path, method, method=method, max_steps=2, cd_k=2)
    init = T.build_model(cfg, 784, torch.Generator().manual_seed(cfg.seed)).state_dict()
    rec = T.train(cfg, dataset=data)
    assert rec["step"] == 2
    first = [r for r in T.read_metrics(cfg.out_dir) if "test_ll" in r][0]
    assert first["step"] == 0 and rec["test_ll"] != first["test_ll"]  # the model moved
    after = _params(cfg.out_dir)
    assert any(not torch.equal(after[k], init[k]) for k in init)
    assert all(torch.isfinite(v).all() for v in after.values())
    lines = [json.loads(x) for x in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "test_ll" in r] == [0, 2]


def test_resume_equals_uninterrupted(tmp_path, data):
    full = _cfg(tmp_path, "full", epochs=2, checkpoint_every=5, method="cd", cd_k=2)
    T.train(full, dataset=data)
    part = _cfg(tmp_path, "part", epochs=2, checkpoint_every=5, method="cd", cd_k=2, max_steps=15)
    T.train(part, dataset=data)
    assert T.load_checkpoint(part.out_dir)["step"] == 15
    part.max_steps = 0
    T.train(part, resume=True, dataset=data)
    a, b = _params(full.out_dir), _params(part.out_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on the CPU

    def evals(d):
        # evaluations at epoch ends (the interrupted run also logged one where it stopped)
        return [
            (r["step"], r["test_ll"], r["val_ll"]) for r in T.read_metrics(d) if "test_ll" in r and r["step"] % 12 == 0
        ]

    assert evals(full.out_dir) == evals(part.out_dir)


def _saved_step(run: Path) -> int:
    """The step of the checkpoint on disk now (-1 if none yet); checkpoints are renamed into place
    whole, so a read sees the old file or the new one."""
    try:
        return int(T.load_checkpoint(run)["step"])
    except UserError:
        return -1


def test_kill_9_then_resume_is_bit_identical(tmp_path, data):
    """A real SIGKILL in the middle of training, once the run has checkpointed step 10 (of 120);
    the resumed run ends where an uninterrupted one does."""
    args = [
        "method=steincd",
        "dataset=mnist-embedded",
        "n_train=2000",
        "batch_size=50",
        "n_hidden=4",
        "epochs=3",
        "checkpoint_every=2",
        "progress=false",
        "eval_every=0",
    ]
    ref = tmp_path / "ref"
    T.train(
        _cfg(tmp_path, "ref", method="steincd", n_train=2000, epochs=3, checkpoint_every=2, eval_every=0), dataset=data
    )
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "steinebm.cli", "train", *args, f"out_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300  # generous: a loaded machine starts python and torch slowly
        while _saved_step(run) < 10:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.time() < deadline, "the run did not reach step 10"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    killed_at = T.load_checkpoint(run)["step"]  # readable after the kill
    assert 10 <= killed_at < 120
    res = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a, b = _params(ref), _params(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


class _NaNAfter(SteinCD):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.calls, self.n = 0, n

    def loss(self, energy, x_pos, generator=None):
        self.calls += 1
        loss, stats = super().loss(energy, x_pos, generator)
        return (loss * float("nan") if self.calls >= self.n else loss), stats


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, data, monkeypatch):
    monkeypatch.setattr(T, "build_learner", lambda cfg: _NaNAfter(5))
    cfg = _cfg(tmp_path, "nan", checkpoint_every=2, epochs=1)
    with pytest.raises(DivergenceError, match="step 5") as exc:
        T.train(cfg, dataset=data)
    assert "step 4" in str(exc.value) and "checkpoint.pt" in str(exc.value)
    ck = T.load_checkpoint(cfg.out_dir)
    assert ck["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_existing_run_is_not_overwritten(tmp_path, data):
    cfg = _cfg(tmp_path, "x", max_steps=2)
    T.train(cfg, dataset=data)
    before = (Path(cfg.out_dir) / "checkpoint.pt").read_bytes()
    with pytest.raises(UserError, match="--resume"):
        T.train(cfg, dataset=data)
    assert (Path(cfg.out_dir) / "checkpoint.pt").read_bytes() == before


def test_resume_with_other_config_is_refused(tmp_path, data):
    cfg = _cfg(tmp_path, "x", max_steps=2)
    T.train(cfg, dataset=data)
    cfg.lr = 1e-2
    with pytest.raises(UserError, match="lr"):
        T.train(cfg, resume=True, dataset=data)


def test_unwritable_run_folder_is_reported_before_training(tmp_path, data):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not writable"):
        T.train(_cfg(tmp_path, "file/run"), dataset=data)


def test_checkpoint_never_executes_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run = tmp_path / "evil"
    run.mkdir()
    torch.save({"version": 1, "model": Evil(), "config": {}}, run / "checkpoint.pt")
    with pytest.raises(UserError, match="unreadable or was tampered"):
        T.load_checkpoint(run)
    assert not marker.exists()


def test_load_returns_trained_model(tmp_path, data):
    cfg = _cfg(tmp_path, "x", max_steps=3)
    rec = T.train(cfg, dataset=data)
    import steinebm

    model = steinebm.load(cfg.out_dir)
    # the loaded model scores the test set exactly as the run recorded
    assert steinebm.average_log_likelihood(model, data.test.x) == pytest.approx(rec["test_ll"], abs=1e-9)


class _KilledAt(SteinCD):
    """Stands for a kill -9 at a given step (before any in-epoch checkpoint)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.calls, self.n = 0, n

    def loss(self, energy, x_pos, generator=None):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return super().loss(energy, x_pos, generator)


def test_resume_from_step_0_logs_one_evaluation_per_epoch(tmp_path, data, monkeypatch):
    cfg = _cfg(tmp_path, "r0", epochs=2)  # 12 steps per epoch, checkpoints at epoch ends
    with monkeypatch.context() as mp:
        mp.setattr(T, "build_learner", lambda c: _KilledAt(4))
        with pytest.raises(KeyboardInterrupt):
            T.train(cfg, dataset=data)
    assert T.load_checkpoint(cfg.out_dir)["step"] == 0
    T.train(cfg, resume=True, dataset=data)
    evals = [(r["step"], r["epoch"]) for r in T.read_metrics(cfg.out_dir) if "test_ll" in r]
    assert evals == [(0, 0.0), (12, 1.0), (24, 2.0)]
    ref = _cfg(tmp_path, "ref", epochs=2)
    T.train(ref, dataset=data)
    a, b = _params(ref.out_dir), _params(cfg.out_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_is_an_error(tmp_path, data):
    with pytest.raises(UserError, match="nothing to resume"):
        T.train(_cfg(tmp_path, "none"), resume=True, dataset=data)


def test_truncated_metrics_line_is_tolerated(tmp_path, data):
    cfg = _cfg(tmp_path, "t", max_steps=2)
    T.train(cfg, dataset=data)
    with open(Path(cfg.out_dir) / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "los')  # a kill in the middle of a write
    assert [r["step"] for r in T.read_metrics(cfg.out_dir)][-1] == 2
    cfg.max_steps = 4
    T.train(cfg, resume=True, dataset=data)
    assert T.load_checkpoint(cfg.out_dir)["step"] == 4


def test_fused_and_foreach_adam_take_the_same_steps(tmp_path, data):
    """adam_impl changes how Adam is computed, not what: after 20 SteinCD steps the parameters of
    the two runs agree to float32 rounding, and the fused run really used the fused kernel."""
    from steinebm.config import Config

    runs = {}
    for impl in ("fused", "foreach"):
        cfg = Config(
            dataset="mnist-embedded",
            n_train=200,
            batch_size=20,
            n_hidden=3,
            max_steps=20,
            progress=False,
            out_dir=str(tmp_path / impl),
            adam_impl=impl,
        )
        T.train(cfg, dataset=data)
        runs[impl] = T.load_checkpoint(tmp_path / impl)
    assert runs["fused"]["optimizer"]["param_groups"][0]["fused"] is True
    assert not runs["foreach"]["optimizer"]["param_groups"][0].get("fused")
    for k, v in runs["fused"]["model"].items():
        torch.testing.assert_close(v, runs["foreach"]["model"][k], rtol=1e-4, atol=1e-5)
