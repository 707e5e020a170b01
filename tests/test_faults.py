"""Faults a long run meets, each provoked for real or injected at a known point: kill -9 at random
moments and in the middle of a checkpoint write, non-finite losses and parameters (stop, or roll
back with a lower learning rate), a full disk, an unwritable run folder, and the TensorBoard
scalars beside the JSON lines."""

from __future__ import annotations

import copy
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from steinebm import cli
from steinebm.data import load_dataset
from steinebm.engine import build as B
from steinebm.engine import train as T
from steinebm.engine.checkpoint import PROBE_PREFIX
from steinebm.engine.config import Config
from steinebm.errors import DivergenceError, UserError
from steinebm.learners import SteinCD

SMALL = dict(dataset="mnist-embedded", n_train=600, batch_size=50, progress=False, n_hidden=4, threads=1)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist-embedded")


def _cfg(tmp_path: Path, name: str, **kw) -> Config:
    return Config(**{**SMALL, "out_dir": str(tmp_path / name), **kw})


def _same(a: Any, b: Any, where: str = "") -> None:
    """Every tensor equal bit for bit (torch.equal), every other value equal, recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _state(ck: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint holds but its config (whose out_dir differs between runs) and the
    wall-clock seconds it took."""
    return {k: v for k, v in ck.items() if k not in ("config", "elapsed")}


def _temps(run: Path) -> list[Path]:
    return sorted(run.glob("*.tmp"))


def _metrics(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the wall-clock times."""
    return [{k: v for k, v in r.items() if k != "time"} for r in T.read_metrics(run)]


def _snapshots(monkeypatch) -> dict[int, dict[str, Any]]:
    """Every checkpoint an in-process run saves, by step (copies: the tensors are the live ones)."""
    saved: dict[int, dict[str, Any]] = {}
    real = T.save_checkpoint

    def record(obj: dict[str, Any], path: Path) -> None:
        saved[int(obj["step"])] = copy.deepcopy(obj)
        real(obj, path)

    monkeypatch.setattr(T, "save_checkpoint", record)
    return saved


def _saved_step(ck: Path) -> int:
    """The step of the checkpoint on disk now (-1 if none yet); checkpoints are renamed into place
    whole, so a read sees the old file or the new one."""
    try:
        return int(torch.load(ck, map_location="cpu", weights_only=True)["step"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return -1


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "steinebm.cli", "train", *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "STEINEBM_OFFLINE": "1"}


# --- kill -9 ------------------------------------------------------------------------------------

# 300 steps with a checkpoint after each one, so that a large share of the time is spent writing them
KILL_RUN = dict(
    method="steincd",
    n_train=400,
    batch_size=20,
    epochs=15,
    checkpoint_every=1,
    log_every=10,
    eval_every=5,
    seed=3,
)


def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path, data, monkeypatch):
    """Six SIGKILLs at seeded random moments of one run, each resumed by the next process: every
    checkpoint left by a kill equals, tensor for tensor, the one an uninterrupted run saved at that
    step, and the last resume ends where the uninterrupted run ends (metrics included). Every other
    kill waits for a checkpoint's temp file to appear, so that kills land inside writes too. Each
    kill comes only once the process has itself checkpointed its target step (or, when the last
    kill already went past it, the step after the one that kill left), so no trial is killed while
    it starts, however slow the machine."""
    with monkeypatch.context() as mp:
        ref = _snapshots(mp)
        T.train(_cfg(tmp_path, "ref", **KILL_RUN), dataset=data)
    final = max(ref)
    assert final == 300

    run = tmp_path / "killed"
    args = [f"{k}={v}" for k, v in {**SMALL, **KILL_RUN}.items()] + [f"out_dir={run}"]
    ck = run / T.CHECKPOINT
    rnd = random.Random(20_240_611)
    # the kill moments, as steps reached: seeded, increasing, at least 23 steps apart and all well
    # before the end, so that a loaded machine cannot let a trial finish the run before its kill
    # (a time-based delay could)
    targets = [15 + 42 * i + rnd.randrange(20) for i in range(6)]
    kills_in_write, steps = 0, []
    for trial, target in enumerate(targets):
        # the checkpoint the last kill left is already on disk: only a later one is this process's
        goal = max(target, steps[-1] + 1 if steps else 0)
        proc = subprocess.Popen(
            _cli(args) + (["--resume"] if trial else []), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.time() + 300  # generous: a loaded machine starts python and torch slowly
            while _saved_step(ck) < goal:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.time() < deadline, f"trial {trial}: step {goal} not reached"
                time.sleep(0.002)
            time.sleep(rnd.uniform(0.0, 0.02))
            if trial % 2:
                while not _temps(run) and time.time() < deadline and proc.poll() is None:
                    time.sleep(0.0005)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL  # killed, not finished
        kills_in_write += bool(_temps(run))
        left = T.load_checkpoint(run)  # a kill never leaves the checkpoint unreadable
        steps.append(int(left["step"]))
        assert steps[-1] >= goal >= target, (trial, steps)  # killed at or after its target
        _same(_state(left), _state(ref[steps[-1]]), f"trial {trial}")

    res = subprocess.run(_cli(args) + ["--resume"], env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    _same(_state(T.load_checkpoint(run)), _state(ref[final]), "final")
    assert _temps(run) == []  # the writes the kills cut short left no temp files behind
    assert _metrics(run) == _metrics(tmp_path / "ref")
    assert all(a < b for a, b in zip(steps, steps[1:])) and steps[-1] < final  # every kill was during training
    assert kills_in_write >= 1, steps  # (5 of 6 when this was written)


# A subprocess that runs the command line and kills itself (SIGKILL) as soon as the writability
# probe's file is written and fsynced, before the probe removes it.
KILLED_IN_PROBE = r"""
import os, signal, sys

real_fsync = os.fsync

def fsync(fd):
    real_fsync(fd)
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".steinebm-probe-"):
        os.kill(os.getpid(), signal.SIGKILL)

os.fsync = fsync
from steinebm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_inside_the_writability_probe_leaves_no_file_behind(tmp_path, data):
    """A kill while the run folder is probed for writability leaves the probe's 64 KiB temp file;
    the next run in that folder removes it (runs killed at start-up again and again would
    otherwise pile them up)."""
    run = tmp_path / "run"
    args = [f"{k}={v}" for k, v in SMALL.items()] + ["max_steps=2", f"out_dir={run}"]
    res = subprocess.run([sys.executable, "-c", KILLED_IN_PROBE, "train", *args], env=ENV, capture_output=True)
    assert res.returncode == -signal.SIGKILL, res.stderr.decode()
    (probe,) = _temps(run)
    assert probe.name.startswith(PROBE_PREFIX) and probe.stat().st_size == 65536
    assert not (run / T.CHECKPOINT).exists()  # killed before the first checkpoint: a fresh run may start
    T.train(_cfg(tmp_path, "run", max_steps=2), dataset=data)
    assert _temps(run) == []
    assert T.load_checkpoint(run)["step"] == 2


# A subprocess that runs the command line with its checkpoint write stalled at the k-th save:
# "partial" stalls inside torch.save with half the bytes written, "rename" after the temp file is
# complete and fsynced but before it is renamed over checkpoint.pt.
STALLED_SAVE = r"""
import io, os, sys, time
from pathlib import Path
import torch

marker, phase, k = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
count = [0]
real_save, real_replace = torch.save, os.replace

def stall():
    marker.touch()
    time.sleep(600)

def save(obj, f, *args, **kwargs):
    if phase == "partial" and isinstance(obj, dict) and "step" in obj:
        count[0] += 1
        if count[0] == k:
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            stall()
    return real_save(obj, f, *args, **kwargs)

def replace(src, dst):
    if phase == "rename" and str(dst).endswith("checkpoint.pt"):
        count[0] += 1
        if count[0] == k:
            stall()
    return real_replace(src, dst)

torch.save, os.replace = save, replace
from steinebm.cli import main
sys.exit(main(sys.argv[4:]))
"""


@pytest.mark.parametrize("phase", ["partial", "rename"])
def test_kill_inside_a_checkpoint_write_keeps_the_last_one(tmp_path, data, phase):
    """Killed while the third checkpoint (step 4) is being written: the step-2 checkpoint is
    still there and readable, the temp file of the cut-short write is removed by the resumed
    run, and that run ends bit-identical to an uninterrupted one."""
    kw = dict(method="steincd", checkpoint_every=2, epochs=2, eval_every=0)
    ref = _cfg(tmp_path, "ref", **kw)
    T.train(ref, dataset=data)
    run, marker = tmp_path / "killed", tmp_path / "stalled"
    args = [f"{k}={v}" for k, v in {**SMALL, **kw}.items()] + [f"out_dir={run}"]
    cmd = [sys.executable, "-c", STALLED_SAVE, str(marker), phase, "3", "train", *args]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300  # generous: a loaded machine starts python and torch slowly
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.time() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (tmp,) = _temps(run)  # the write the kill interrupted
    assert tmp.name.startswith(T.CHECKPOINT)
    if phase == "partial":
        with pytest.raises(Exception):  # noqa: B017 - a truncated archive; torch raises its own types
            torch.load(tmp, weights_only=True)
    else:
        assert torch.load(tmp, weights_only=True)["step"] == 4  # complete, only the rename was missing
    assert T.load_checkpoint(run)["step"] == 2
    T.train(_cfg(tmp_path, "killed", **kw), resume=True, dataset=data)
    assert _temps(run) == []
    _same(_state(T.load_checkpoint(run)), _state(T.load_checkpoint(ref.out_dir)))


def test_checkpoint_write_fsyncs_verifies_keeps_the_previous_then_renames(tmp_path, monkeypatch):
    """The order that makes a checkpoint survive a power cut and a garbled write, read from the
    kernel's own names of the file descriptors: the new file is fsynced, read back, the old one
    linked to checkpoint-previous.pt, the new one renamed into place, the folder fsynced."""
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    def link(src, dst) -> None:
        events.append(("link", str(src), str(dst)))
        real_link(src, dst)

    path = tmp_path / "checkpoint.pt"
    T.save_checkpoint({"step": 6, "w": torch.zeros(5)}, path)
    first_inode = path.stat().st_ino
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    T.save_checkpoint({"step": 7, "w": torch.arange(5.0)}, path)
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "link", "replace", "replace", "fsync"], events
    (_, synced), (_, linked, prev_tmp), (_, prev_src, prev), (_, src, dst), (_, folder) = events
    assert linked == str(path) and prev_src == prev_tmp and prev == str(tmp_path / "checkpoint-previous.pt")
    assert synced == src and Path(src).parent == tmp_path and dst == str(path)
    assert folder == str(tmp_path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(5.0))
    # the previous checkpoint is the very file that was there (a link, not a copy)
    assert (tmp_path / "checkpoint-previous.pt").stat().st_ino == first_inode
    assert torch.equal(torch.load(tmp_path / "checkpoint-previous.pt", weights_only=True)["w"], torch.zeros(5))
    plain = tmp_path / "plain"
    plain.write_text("")  # the mode an ordinary new file gets under this umask
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert _temps(tmp_path) == []


# --- divergence ---------------------------------------------------------------------------------


class _NaNAt(SteinCD):
    """A NaN loss on the calls in ``bad`` (1-based), a normal one otherwise."""

    def __init__(self, bad: set[int] | range) -> None:
        super().__init__()
        self.calls, self.bad = 0, bad

    def loss(self, energy, x_pos, generator=None):
        self.calls += 1
        loss, stats = super().loss(energy, x_pos, generator)
        return (loss * float("nan") if self.calls in self.bad else loss), stats


class _Interrupted(_NaNAt):
    """_NaNAt that also stands for a kill at call ``stop`` (KeyboardInterrupt ends the run there)."""

    def __init__(self, bad: set[int], stop: int) -> None:
        super().__init__(bad)
        self.stop = stop

    def loss(self, energy, x_pos, generator=None):
        if self.calls + 1 == self.stop:
            raise KeyboardInterrupt
        return super().loss(energy, x_pos, generator)


def test_nan_loss_stops_with_one_line_naming_step_and_checkpoint(tmp_path, data, monkeypatch, capsys):
    monkeypatch.setattr(B, "build_learner", lambda cfg: _NaNAt({5}))
    run = tmp_path / "nan"
    args = [f"{k}={v}" for k, v in SMALL.items()] + ["checkpoint_every=2", f"out_dir={run}"]
    assert cli.main(["train", *args]) == 3
    err = capsys.readouterr().err
    progress = [ln for ln in err.splitlines() if ln.startswith("steincd seed 0: epoch")]  # progress=false's lines
    (line,) = [ln for ln in err.splitlines() if ln not in progress]
    assert line.startswith("steinebm: training diverged at step 5:")
    assert "non-finite energy loss" in err and f"{run / T.CHECKPOINT} (step 4)" in err
    assert "on_divergence=rollback" in err
    ck = T.load_checkpoint(run)
    assert ck["step"] == 4 and all(torch.isfinite(v).all() for v in ck["model"].values())

    # the remedy the message names: resume with rollback on (the NaN comes again at step 5)
    monkeypatch.setattr(B, "build_learner", lambda cfg: _NaNAt({1}))
    assert cli.main(["train", *args, "on_divergence=rollback", "max_steps=8", "--resume"]) == 0
    capsys.readouterr()
    rollbacks = [r for r in T.read_metrics(run) if "rollback" in r]
    assert [(r["step"], r["diverged_at"]) for r in rollbacks] == [(4, 5)]
    assert T.load_checkpoint(run)["step"] == 8


def test_non_finite_parameter_stops_within_the_step(tmp_path, data, monkeypatch):
    """An update that leaves an infinite weight (with a finite loss) stops the run at that step."""
    real = T.build_parts

    def build(*a, **k):
        parts = real(*a, **k)
        inner, calls = parts.step, [0]

        def step(x, rng, y=None):
            out = inner(x, rng, y)
            calls[0] += 1
            if calls[0] == 7:
                with torch.no_grad():
                    next(parts.modules["model"].parameters())[0].fill_(float("inf"))
            return out

        parts.step = step
        return parts

    monkeypatch.setattr(T, "build_parts", build)
    cfg = _cfg(tmp_path, "inf", checkpoint_every=3)
    with pytest.raises(DivergenceError) as exc:
        T.train(cfg, dataset=data)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("training diverged at step 7: non-finite parameters")
    assert "(step 6)" in msg
    assert T.load_checkpoint(cfg.out_dir)["step"] == 6


def test_rollback_lowers_lr_continues_and_the_lr_survives_resume(tmp_path, data, monkeypatch):
    """A NaN at step 7 with on_divergence=rollback: one rollback to the step-6 checkpoint, the
    learning rate halved, and the run goes on to step 12. The result equals, bit for bit, a run
    stopped at step 6 whose checkpoint had its lr halved by hand and was then resumed."""
    kw = dict(checkpoint_every=3, max_steps=12, log_every=1, eval_every=0, on_divergence="rollback")
    with monkeypatch.context() as mp:
        mp.setattr(B, "build_learner", lambda cfg: _NaNAt({7}))
        cfg = _cfg(tmp_path, "rb", **kw)
        rec = T.train(cfg, dataset=data)
    assert rec["step"] == 12
    lines = T.read_metrics(cfg.out_dir)
    rollbacks = [r for r in lines if "rollback" in r]
    assert len(rollbacks) == 1
    (r,) = rollbacks
    assert (r["rollback"], r["step"], r["diverged_at"], r["lr"]) == (1, 6, 7, cfg.lr * 0.5)
    assert "non-finite energy loss" in r["reason"]
    losses = [r["step"] for r in lines if "loss" in r]
    assert losses == list(range(1, 13))  # the abandoned step's records are gone, none twice
    ck = T.load_checkpoint(cfg.out_dir)
    assert [g["lr"] for g in ck["optimizer"]["param_groups"]] == [cfg.lr * 0.5]
    assert ck["rollbacks"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values())

    by_hand = _cfg(tmp_path, "hand", **{**kw, "max_steps": 6})
    T.train(by_hand, dataset=data)
    path = Path(by_hand.out_dir) / T.CHECKPOINT
    saved = torch.load(path, weights_only=True)
    saved["optimizer"]["param_groups"][0]["lr"] *= 0.5
    T.save_checkpoint(saved, path)  # a hand edit, with its digest renewed
    by_hand.max_steps = 12
    T.train(by_hand, resume=True, dataset=data)
    _same(T.load_checkpoint(by_hand.out_dir)["model"], ck["model"])

    # killed right after the rollback, before the next checkpoint: the lowered lr was saved at once,
    # and the resumed run ends where the uninterrupted one does
    killed = _cfg(tmp_path, "rb-killed", **kw)
    with monkeypatch.context() as mp:
        mp.setattr(B, "build_learner", lambda cfg: _Interrupted({7}, stop=8))
        with pytest.raises(KeyboardInterrupt):
            T.train(killed, dataset=data)
    saved = T.load_checkpoint(killed.out_dir)
    assert (saved["step"], saved["rollbacks"], saved["optimizer"]["param_groups"][0]["lr"]) == (6, 1, cfg.lr * 0.5)
    T.train(killed, resume=True, dataset=data)
    _same(T.load_checkpoint(killed.out_dir)["model"], ck["model"])

    # a later resume trains on with the lowered lr, not the config's
    live: dict[str, Any] = {}
    real = T.build_parts

    def build(*a, **k):
        parts = real(*a, **k)
        live.update(parts.optimizers)
        return parts

    monkeypatch.setattr(T, "build_parts", build)
    cfg.max_steps = 15
    T.train(cfg, resume=True, dataset=data)
    assert live["optimizer"].param_groups[0]["lr"] == cfg.lr * 0.5
    ck = T.load_checkpoint(cfg.out_dir)
    assert ck["step"] == 15 and ck["optimizer"]["param_groups"][0]["lr"] == cfg.lr * 0.5


def test_rollback_gives_up_after_max_rollbacks(tmp_path, data, monkeypatch):
    """A NaN at every step from 5 on: two rollbacks to step 4 (lr halved, then quartered), then
    the DivergenceError, on one line."""
    monkeypatch.setattr(B, "build_learner", lambda cfg: _NaNAt(range(5, 10_000)))
    cfg = _cfg(tmp_path, "hopeless", checkpoint_every=2, on_divergence="rollback", max_rollbacks=2)
    with pytest.raises(DivergenceError) as exc:
        T.train(cfg, dataset=data)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("training diverged at step 5 after 2 rollbacks (lr=7.5e-05)")
    assert "(step 4)" in msg
    rollbacks = [(r["step"], r["lr"]) for r in T.read_metrics(cfg.out_dir) if "rollback" in r]
    assert rollbacks == [(4, cfg.lr / 2), (4, cfg.lr / 4)]


# --- the run folder: writable, and room for checkpoints ------------------------------------------


class _Counting(SteinCD):
    calls = 0

    def loss(self, energy, x_pos, generator=None):
        _Counting.calls += 1
        return super().loss(energy, x_pos, generator)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_training(monkeypatch):
    """Counts the training steps taken (must stay 0 when a check refuses the run)."""
    _Counting.calls = 0
    monkeypatch.setattr(B, "build_learner", lambda cfg: _Counting())
    return _Counting


def _full_disk(monkeypatch, free: int) -> None:
    real = shutil.disk_usage

    def usage(path):
        total, used, _ = real(path)
        return SimpleNamespace(total=total, used=used, free=free)

    monkeypatch.setattr(shutil, "disk_usage", usage)


@pytest.mark.parametrize("resume", [False, True])
def test_full_disk_is_reported_before_training_and_loses_nothing(tmp_path, data, monkeypatch, resume):
    cfg = _cfg(tmp_path, "run", max_steps=2)
    run = Path(cfg.out_dir)
    if resume:
        T.train(cfg, dataset=data)
        cfg.max_steps = 4
        (run / "notes.txt").write_text("keep me")  # the user's notes beside their run
    else:  # a stale log of a run killed before its first checkpoint
        run.mkdir()
        (run / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
    before = _tree(run)
    _full_disk(monkeypatch, free=0)
    with monkeypatch.context() as mp:
        mp.setattr(B, "build_learner", lambda c: _Counting())
        _Counting.calls = 0
        with pytest.raises(UserError) as exc:
            T.train(cfg, resume=resume, dataset=data)
    msg = str(exc.value)
    assert "\n" not in msg and "not enough free space" in msg and "0.0 MiB free" in msg
    assert _Counting.calls == 0
    assert _tree(run) == before  # nothing lost, nothing left behind


def test_free_space_check_asks_for_three_real_checkpoints(tmp_path, data, monkeypatch):
    """The estimate against the size of a real checkpoint of the same run (a SteinGAN: energy,
    generator and their Adam states): refused with room for 2.5 of them (the previous, the
    latest and the one being written), trained with room for 3 and a MiB."""
    kw = dict(method="steingan", n_train=100, batch_size=10, noise_dim=8, max_steps=1, eval_every=0)
    T.train(_cfg(tmp_path, "sized", **kw), dataset=data)
    real = (tmp_path / "sized" / T.CHECKPOINT).stat().st_size
    assert real > 10 * 2**20  # the generator dominates: the per-tensor allowances are small beside it
    with monkeypatch.context() as mp:
        _full_disk(mp, free=int(2.5 * real))
        with pytest.raises(UserError, match="not enough free space"):
            T.train(_cfg(tmp_path, "small-disk", **kw), dataset=data)
    with monkeypatch.context() as mp:
        _full_disk(mp, free=3 * real + 2**20)
        T.train(_cfg(tmp_path, "enough", **kw), dataset=data)
    assert T.load_checkpoint(tmp_path / "enough")["step"] == 1


def _blocks_writes(folder: Path) -> bool:
    try:
        (folder / "probe").write_text("")
    except PermissionError:
        return True
    (folder / "probe").unlink()
    return False


def test_read_only_run_folder_is_reported_before_training(tmp_path, data, monkeypatch, no_training):
    """A folder holding a finished run, made read-only: the resume is refused on one line and the
    folder is as it was. Run as root, chmod blocks nothing (checked here), so the kernel's answer
    to a non-root writer, EACCES, is injected into the run's file creation in that folder."""
    cfg = _cfg(tmp_path, "ro", max_steps=2)
    T.train(cfg, dataset=data)
    run = Path(cfg.out_dir)
    (run / "notes.txt").write_text("keep me")
    before = _tree(run)
    run.chmod(0o555)
    try:
        if not _blocks_writes(run):
            assert os.geteuid() == 0  # only a privileged user writes through mode 0555
            real_mkstemp = tempfile.mkstemp

            def mkstemp(*a, dir=None, **k):
                if dir is not None and Path(dir) == run:
                    raise PermissionError(13, "Permission denied", str(dir))
                return real_mkstemp(*a, dir=dir, **k)

            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        cfg.max_steps = 4
        _Counting.calls = 0
        with pytest.raises(UserError) as exc:
            T.train(cfg, resume=True, dataset=data)
    finally:
        run.chmod(0o755)
    msg = str(exc.value)
    assert "\n" not in msg and msg == f"run folder {run} is not writable (Permission denied): choose another out_dir"
    assert no_training.calls == 0
    assert _tree(run) == before


def test_run_folder_under_a_file_is_reported_before_training(tmp_path, data, no_training):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="not writable") as exc:
        T.train(_cfg(tmp_path, "file/run"), dataset=data)
    assert "\n" not in str(exc.value)
    assert no_training.calls == 0 and blocker.read_text() == "not a folder"


# --- TensorBoard --------------------------------------------------------------------------------


def _tensorboard_scalars(run: Path) -> dict[tuple[str, int], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    out: dict[tuple[str, int], float] = {}
    for tag in acc.Tags()["scalars"]:
        for ev in acc.Scalars(tag):
            assert (tag, ev.step) not in out, (tag, ev.step)  # a purged step shows once
            out[(tag, ev.step)] = ev.value
    return out


def _json_scalars(run: Path) -> dict[tuple[str, int], float]:
    """Each numeric JSON-lines value as TensorBoard stores it: a float32."""
    out = {}
    for rec in T.read_metrics(run):
        for k, v in rec.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[(k, rec["step"])] = float(torch.tensor(v, dtype=torch.float32))
    return out


def test_tensorboard_scalars_equal_the_json_lines(tmp_path, data):
    cfg = _cfg(tmp_path, "tb", tensorboard=True, log_every=1, max_steps=5, eval_every=0)
    T.train(cfg, dataset=data)
    run = Path(cfg.out_dir)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    want = _json_scalars(run)
    assert {k for k, _ in want} >= {"loss", "f_pos", "f_neg", "test_ll", "val_ll", "epoch", "time"}
    assert len(want) > 20
    assert _tensorboard_scalars(run) == want


def test_tensorboard_after_rollback_and_resume_shows_the_kept_records(tmp_path, data, monkeypatch):
    """The steps redone after a rollback and after a resume replace the abandoned ones in
    TensorBoard too (each new writer purges the steps after its checkpoint): a NaN at step 7
    rolls back to step 4, so steps 5 and 6 are logged twice with different values; the run then
    stops at step 11 (records up to 10, checkpoint at 8) and is resumed."""
    cfg = _cfg(tmp_path, "tb", tensorboard=True, log_every=1, checkpoint_every=4, max_steps=12, eval_every=0)
    cfg.on_divergence = "rollback"
    with monkeypatch.context() as mp:
        mp.setattr(B, "build_learner", lambda c: _Interrupted({7}, stop=13))  # call 13 is step 11
        with pytest.raises(KeyboardInterrupt):
            T.train(cfg, dataset=data)
    assert T.load_checkpoint(cfg.out_dir)["step"] == 8
    T.train(cfg, resume=True, dataset=data)
    run = Path(cfg.out_dir)
    want = _json_scalars(run)
    assert ("rollback", 4) in want and ("lr", 4) in want and ("loss", 12) in want
    assert [s for k, s in want if k == "loss"] == list(range(1, 13))
    assert _tensorboard_scalars(run) == want


def test_tensorboard_without_the_package_is_reported_before_training(tmp_path, data, monkeypatch, no_training):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    cfg = _cfg(tmp_path, "tb", tensorboard=True)
    with pytest.raises(UserError) as exc:
        T.train(cfg, dataset=data)
    msg = str(exc.value)
    assert "\n" not in msg and "steinebm[tensorboard]" in msg and "tensorboard=false" in msg
    assert no_training.calls == 0 and not (Path(cfg.out_dir) / T.CHECKPOINT).exists()
