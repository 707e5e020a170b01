"""The run pool under every reproduction: a reproduction is a folder of ordinary runs
(``runs/<label>/seed<k>``), so an interrupted reproduction picks up where it stopped: finished
runs are read back (:func:`read_run`), partial ones resumed, and the rest trained, several at a
time in worker processes (:func:`run_many`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steinebm.data import Dataset, fingerprint
from steinebm.engine.build import load_config_dataset
from steinebm.engine.checkpoint import CHECKPOINT, checkpoint_header
from steinebm.engine.config import Config
from steinebm.engine.preflight import config_diff
from steinebm.engine.provenance import check_same_data
from steinebm.engine.runlog import read_metrics
from steinebm.engine.train import train
from steinebm.errors import DivergenceError, UserError
from steinebm.reproduction.workers import map_in_workers

__all__ = ["run_many", "read_run", "finished_record"]


def _check_same_run(cfg: Config) -> None:
    """A reproduction reuses a finished or partial run only if it was made with this config, on
    this data (where the run recorded its data's fingerprint)."""
    ck = Path(cfg.out_dir) / CHECKPOINT
    if not ck.exists():
        return
    saved = checkpoint_header(ck)["config"]  # the settings only: the weights are not read
    # a finished run reads back on any device; resuming an unfinished one on another device is
    # refused by train() itself (the random state is per device)
    diff = [k for k in config_diff(saved, cfg) if k != "device"]
    if diff:
        raise UserError(f"{cfg.out_dir} holds a run made with other settings ({', '.join(diff)}): use another --out")
    if saved.get("data_fingerprint") is not None:
        what = f"{cfg.out_dir} holds a run made on other data"
        check_same_data(saved, _worker_fingerprint(cfg), what, "use another --out")


def finished_record(cfg: Config) -> dict[str, Any] | None:
    """The last evaluation record of ``cfg``'s run if it has been trained to ``cfg.epochs``
    (None if it is not started or not finished)."""
    ck = Path(cfg.out_dir) / CHECKPOINT
    if not ck.exists():
        return None
    recs = [r for r in read_metrics(cfg.out_dir) if "epoch" in r]
    if recs and recs[-1]["epoch"] >= cfg.epochs:
        return recs[-1]
    return None


def _run(cfg_dict: dict[str, Any]) -> str | None:
    """Train one run (in a worker process) unless it is finished; returns why it diverged, or
    None. (Its records are read by the caller: a worker returns little, see map_in_workers.)"""
    cfg = Config(**cfg_dict)
    _check_same_run(cfg)
    if finished_record(cfg) is None:
        resume = (Path(cfg.out_dir) / CHECKPOINT).exists()
        try:
            train(cfg, resume=resume, dataset=_worker_data(cfg))
        except DivergenceError as e:
            return str(e)
    return None


def _evals(cfg: Config) -> list[dict[str, Any]]:
    # one record per epoch, up to this reproduction's length (a run may have been trained longer)
    by_epoch = {r["epoch"]: r for r in read_metrics(cfg.out_dir) if "epoch" in r and r["epoch"] <= cfg.epochs}
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_run(cfg: Config) -> dict[str, Any]:
    """What :func:`run_many` returns for ``cfg``'s run, as far as it is trained, without training
    it (checked to be ``cfg``'s run): its evaluation records, one per epoch up to ``cfg.epochs``."""
    _check_same_run(cfg)
    return {"out_dir": cfg.out_dir, "evals": _evals(cfg), "diverged": None}


_DATA: dict[tuple[str, str | None], Dataset] = {}


def _worker_data(cfg: Config) -> Dataset:
    key = (cfg.dataset, cfg.data_dir)
    if key not in _DATA:
        _DATA[key] = load_config_dataset(cfg)
    return _DATA[key]


_FINGERPRINTS: dict[tuple[str, str | None], str] = {}


def _worker_fingerprint(cfg: Config) -> str:
    key = (cfg.dataset, cfg.data_dir)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = fingerprint(_worker_data(cfg))
    return _FINGERPRINTS[key]


def run_many(cfgs: list[Config], jobs: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train many runs, ``jobs`` at a time (processes with one torch thread each when jobs > 1)."""
    if jobs <= 1:
        _DATA.clear()  # in this process: read the data afresh for every call, in case its files changed
        _FINGERPRINTS.clear()
        diverged = []
        for k, cfg in enumerate(cfgs):
            log(f"[{k + 1}/{len(cfgs)}] {cfg.out_dir}")
            diverged.append(_run(dataclasses.asdict(cfg)))
    else:
        dicts = []
        for cfg in cfgs:
            d = dataclasses.asdict(cfg)
            d["threads"], d["progress"] = 1, False
            dicts.append(d)
        diverged = map_in_workers(_run, dicts, jobs, lambda k, _: log(f"[{k + 1}/{len(cfgs)}] done {cfgs[k].out_dir}"))
    return [{"out_dir": cfg.out_dir, "evals": _evals(cfg), "diverged": why} for cfg, why in zip(cfgs, diverged)]
