"""A parallel command stops with its workers: Ctrl-C, SIGTERM or a kill of the command leaves no
worker process training, starts no queued run, and loses no checkpoint. Each test runs the real
command line (the demo's five runs, two at a time) in a process group of its own and signals it
for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from steinebm.engine.checkpoint import checkpoint_header
from steinebm.reproduction.workers import map_in_workers

EPOCHS = 3000  # of 50 steps each on the embedded MNIST subset


def _started_runs(out: Path) -> list[Path]:
    """The demo's run folders that have logged a record (each run writes its log as it trains)."""
    return sorted(p.parent for p in out.glob("runs/*/seeds/*/seed0/metrics.jsonl") if p.stat().st_size > 0)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group ``pgid`` is alive (a zombie, dead but not yet reaped by
    whoever adopted it, does not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, pgrp
        except (OSError, IndexError):
            continue  # it ended while being read
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _start_demo(out: Path, log: Path) -> subprocess.Popen:
    """``steinebm demo`` with runs long enough to be stopped mid-training (:data:`EPOCHS`, many
    minutes a run: no run can end, and free its worker for a queued one, before the stop), as a
    terminal would start it: its own process group, Ctrl-C not ignored."""
    cmd = [sys.executable, "-m", "steinebm.cli", "demo", "--epochs", str(EPOCHS), "--out", str(out)]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


# (signal, sent to: the whole group as a terminal's Ctrl-C does, or the command alone as
# `timeout` or `kill PID` do; the exit status expected, None where the kill leaves none to say)
CASES = {
    "ctrl-c": (signal.SIGINT, "group", 130),
    "sigint to the command alone": (signal.SIGINT, "command", 130),
    "sigterm to the command alone": (signal.SIGTERM, "command", 143),
    "sigkill to the command alone": (signal.SIGKILL, "command", None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_stopped_parallel_command_leaves_no_worker_and_starts_no_queued_run(tmp_path, case):
    sig, to, status = CASES[case]
    out, log = tmp_path / "demo", tmp_path / "stderr.txt"
    proc = _start_demo(out, log)
    try:
        # both workers are training: two runs have logged, and neither can have finished
        assert _wait(lambda: len(_started_runs(out)) >= 2, 240), log.read_text()[-2000:]
        assert _wait(lambda: all((r / "checkpoint.pt").exists() for r in _started_runs(out)), 120)
        (os.killpg if to == "group" else os.kill)(proc.pid, sig)
        rc = proc.wait(timeout=60)
        # the command's process group held the command and its workers: all are gone
        assert _wait(lambda: not _group_alive(proc.pid), 15), f"{case}: a worker outlived the command"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    err = log.read_text()
    if status is not None:
        assert rc == status, err[-2000:]
        assert err.splitlines()[-1].endswith("keeps its last checkpoint (continue: run the same command again)")
        # (a killed command cannot release its queues' semaphores: the resource tracker does,
        # and says so)
        assert "leaked semaphore" not in err
    started = _started_runs(out)
    assert len(started) == 2, f"{case}: a queued run started after the stop: {started}"
    for run in started:  # each checkpoint reads back whole, short of the run's end
        assert 0 <= checkpoint_header(run / "checkpoint.pt")["step"] < EPOCHS * 50
        assert torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)


def test_map_in_workers_returns_in_order_and_reports_each_result_in_order():
    seen: list[tuple[int, int]] = []
    assert map_in_workers(abs, [-3, 2, -1, -7], jobs=2, done=lambda k, r: seen.append((k, r))) == [3, 2, 1, 7]
    assert seen == [(0, 3), (1, 2), (2, 1), (3, 7)]


def test_map_in_workers_reraises_a_worker_error_and_stops_the_others():
    started = time.monotonic()
    with pytest.raises(ValueError, match="math domain"):
        # the first item fails at once; the second would sleep a minute if not stopped
        map_in_workers(_sqrt_or_sleep, [-1.0, 60.0], jobs=2)
    assert time.monotonic() - started < 45


def _sqrt_or_sleep(x: float) -> float:
    import math

    if x > 0:
        time.sleep(x)
    return math.sqrt(x)
