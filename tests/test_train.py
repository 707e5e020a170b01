import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from steinebm.core.kernels import RBF
from steinebm.data import load_dataset
from steinebm.engine import build as B
from steinebm.engine import train as T
from steinebm.engine.build import build_model
from steinebm.engine.config import ENERGY_METHODS, Config
from steinebm.errors import DivergenceError, UserError
from steinebm.learners import CD, HyvarinenScoreMatching, SteinCD, SteinScoreMatching, SymmetricSteinCD
from steinebm.models.energies import GaussianBernoulliRBM

SMALL = dict(dataset="mnist-embedded", n_train=600, batch_size=50, progress=False, n_hidden=4)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist-embedded")


def _cfg(tmp_path: Path, name: str, **kw) -> Config:
    return Config(**{**SMALL, "out_dir": str(tmp_path / name), **kw})


def _params(run_dir) -> dict[str, torch.Tensor]:
    return T.load_checkpoint(run_dir)["model"]


def _steincd_grad_np(x: np.ndarray, B: np.ndarray, b: np.ndarray, c: np.ndarray, eps: float) -> list[np.ndarray]:
    """The SteinCD surrogate's theta-gradient on the RBM, in closed form: mean grad_theta f(x-)
    - mean grad_theta f(x+), x- = x + eps phi(x), phi by the double loop of Eq. 5 with the RBF
    kernel at the paper's median bandwidth h = med^2 / log m (med over the pairs i < j), and
    grad_x f = b - x + B tanh(B^T x + c), grad_B f = x tanh(z)^T, grad_b f = x, grad_c f = tanh(z)."""
    m = len(x)
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(2)
    h = float(np.median(np.sqrt(sq[np.triu_indices(m, 1)]))) ** 2 / math.log(m)
    s = b - x + np.tanh(x @ B + c) @ B.T
    phi = np.zeros_like(x)
    for i in range(m):
        for j in range(m):
            k = math.exp(-sq[j, i] / h)
            phi[i] += k * s[j] - 2.0 / h * (x[j] - x[i]) * k
    phi /= m

    def theta_grad(z: np.ndarray) -> list[np.ndarray]:
        t = np.tanh(z @ B + c)
        return [z.T @ t / m, z.mean(0), t.mean(0)]

    return [neg - pos for neg, pos in zip(theta_grad(x + eps * phi), theta_grad(x))]


@pytest.mark.parametrize("method", ENERGY_METHODS)
def test_every_method_trains_two_steps(tmp_path, data, method):
    """Two steps of train() are two Adam steps, written out in numpy (bias-corrected moments, the
    config's betas, Adam's eps 1e-8), on the gradients of the first two batches of the seeded
    order, with the loop's random stream (seed + 1) for the learners' draws. SteinCD's gradient is
    its closed form in numpy; the other rules' come from their learner objects, whose gradients
    tests/test_learners.py checks against closed forms."""
    cfg = _cfg(tmp_path, method, method=method, max_steps=2, cd_k=2)
    init = build_model(cfg, 784, torch.Generator().manual_seed(cfg.seed)).state_dict()
    rec = T.train(cfg, dataset=data)
    assert rec["step"] == 2
    first = [r for r in T.read_metrics(cfg.out_dir) if "test_ll" in r][0]
    assert first["step"] == 0 and rec["test_ll"] != first["test_ll"]  # the model moved
    after = _params(cfg.out_dir)
    lines = [json.loads(x) for x in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "test_ll" in r] == [0, 2]

    learner = {
        "cd": CD(cfg.cd_k, cfg.langevin_step, cfg.langevin_noise),
        "steincd": SteinCD(cfg.epsilon, RBF()),
        "symmetric-steincd": SymmetricSteinCD(cfg.epsilon, RBF()),
        "stein-score-matching": SteinScoreMatching(RBF()),
        "score-matching": HyvarinenScoreMatching(cfg.sm_probes),
    }[method]
    model = GaussianBernoulliRBM(784, cfg.n_hidden)
    names = ["B", "b", "c"]
    theta = [init[k].double().numpy() for k in names]
    m1 = [np.zeros_like(t) for t in theta]
    m2 = [np.zeros_like(t) for t in theta]
    x_train = data.train.x[: cfg.n_train]
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.seed * 100_003))
    rng = torch.Generator().manual_seed(cfg.seed + 1)
    for t in (1, 2):
        x = x_train[perm[(t - 1) * cfg.batch_size : t * cfg.batch_size]]
        with torch.no_grad():
            for k, v in zip(names, theta):
                getattr(model, k).copy_(torch.from_numpy(v))
        model.zero_grad()
        learner.loss(model, x, rng)[0].backward()
        grads = [getattr(model, k).grad.double().numpy() for k in names]
        if method == "steincd":
            B, b, c = (getattr(model, k).detach().double().numpy() for k in names)
            for k, got, want in zip(names, grads, _steincd_grad_np(x.double().numpy(), B, b, c, cfg.epsilon)):
                # entries up to ~2e-3; float32 rounding ~2e-7
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=k)
        for i, g in enumerate(grads):
            m1[i] = cfg.beta1 * m1[i] + (1 - cfg.beta1) * g
            m2[i] = cfg.beta2 * m2[i] + (1 - cfg.beta2) * g * g
            step = m1[i] / (1 - cfg.beta1**t) / (np.sqrt(m2[i] / (1 - cfg.beta2**t)) + 1e-8)
            theta[i] = theta[i] - cfg.lr * step
    for k, v in zip(names, theta):
        # each step moves an entry by up to lr = 3e-4; float32 parameters round at ~1e-7
        np.testing.assert_allclose(after[k].double().numpy(), v, rtol=0, atol=2e-7, err_msg=k)
        assert float(np.abs(v - init[k].double().numpy()).max()) > 1e-4  # and the steps are far larger


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
    monkeypatch.setattr(B, "build_learner", lambda cfg: _NaNAfter(5))
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
    with pytest.raises(UserError, match="already holds a run: continue it with `steinebm resume"):
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
    with pytest.raises(UserError, match="not a steinebm checkpoint and was not loaded"):
        T.load_checkpoint(run)
    assert not marker.exists()


def test_load_returns_trained_model(tmp_path, data):
    cfg = _cfg(tmp_path, "x", max_steps=3)
    rec = T.train(cfg, dataset=data)
    import steinebm

    model = steinebm.load(cfg.out_dir)
    # the loaded model scores the test set exactly as the run recorded
    assert steinebm.log_likelihood(model, data.test.x).value == pytest.approx(rec["test_ll"], abs=1e-9)


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
        mp.setattr(B, "build_learner", lambda c: _KilledAt(4))
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
    from steinebm.engine.config import Config

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


HOST_READS = ("__float__", "__bool__", "__int__", "item", "tolist")


@pytest.mark.parametrize("method", ["steincd", "cd", "steingan", "dcgan", "steingan-adaptive"])
def test_host_reads_come_once_per_log_line_not_once_per_step(tmp_path, monkeypatch, method):
    """Every read of a tensor's value on the host (float, bool, int, item, tolist: each a stall
    of a GPU step) is counted while a run trains 40 and then 80 steps with a log line every 20.
    The 40 extra steps add two log lines and must add at most a handful of reads, not one or more
    per step. Reads inside kernels.py are left out: the fused RBF product picks its form from two
    numbers only when its tensors are on the CPU, where a read stalls nothing."""
    data = load_dataset("mnist-embedded")
    real = {name: getattr(torch.Tensor, name) for name in HOST_READS}
    counted = [0]

    def counting(name):
        def read(self, *a, **k):
            if not sys._getframe(1).f_code.co_filename.endswith("kernels.py"):
                counted[0] += 1
            return real[name](self, *a, **k)

        return read

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))

    def reads(steps: int) -> int:
        counted[0] = 0
        # SteinGAN with the adaptive discount (Figure 2's presets) decides it on the device too
        rule = {"method": "steingan", "gamma": 0.5, "gamma_adaptive": 0.9} if method == "steingan-adaptive" else {}
        cfg = _cfg(
            tmp_path, f"{method}-{steps}", **{"method": method, **rule}, max_steps=steps, log_every=20, eval_every=0
        )
        T.train(cfg, dataset=data)
        return counted[0]

    extra = reads(80) - reads(40)
    assert 0 < extra <= 2 * 8, f"{method}: {extra} more host reads for 40 more steps"
