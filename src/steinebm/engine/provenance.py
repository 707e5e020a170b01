"""What a run was trained on, and the check that it is scored on the same data.

Training records the dataset's name and :func:`~steinebm.data.fingerprint` in the run's config
(``dataset``, ``data_fingerprint``), so both are in ``config.yaml`` and in the checkpoint.
Whatever later scores the run on data (``steinebm evaluate``, a resumed run, a reproduction that
reuses a finished run) loads the data the config names and compares fingerprints; a difference
is refused in one line, unless the user names a dataset on purpose (``--dataset NAME``). Runs
saved before fingerprints were recorded load as before, unchecked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from steinebm.data import DATASETS, Dataset, fingerprint, load_dataset
from steinebm.engine.config import Config
from steinebm.errors import DataError

__all__ = ["record_data", "check_same_data", "load_run_data"]


def _short(fp: str) -> str:
    return fp[:12]


def record_data(cfg: Config, data: Dataset) -> Config:
    """``cfg`` with what it is about to train on: ``data_fingerprint`` set to ``data``'s
    fingerprint and ``dataset`` to ``data``'s name (where that is one of
    :data:`~steinebm.data.DATASETS`: a dataset handed to :func:`~steinebm.engine.train.train` in Python
    is recorded as what it is, not as the config's default).

    A config that already holds a fingerprint (a run's config.yaml used again) must match the
    data: otherwise a one-line :class:`DataError` says how to go on.
    """
    fp = fingerprint(data)
    if cfg.data_fingerprint is not None and cfg.data_fingerprint != fp:
        raise DataError(
            f"the data loaded ({data.name} from {data.source}, fingerprint {_short(fp)}) is not the data this "
            f"config was recorded with (data_fingerprint {_short(cfg.data_fingerprint)}): point data_dir at that "
            "data, or set data_fingerprint=null to train on this data"
        )
    name = data.name if data.name in DATASETS else cfg.dataset
    return dataclasses.replace(cfg, dataset=name, data_fingerprint=fp).validate()


def check_same_data(
    saved: Mapping[str, Any], fp: str, what: str, fix: str = "point --data-dir at the data it was trained on"
) -> None:
    """Refuse, in one line starting with ``what`` and ending with ``fix``, data of fingerprint
    ``fp`` for a run whose saved config records another; a config that records none (a run
    saved before fingerprints were recorded) passes."""
    recorded = saved.get("data_fingerprint")
    if isinstance(recorded, str) and recorded != fp:
        raise DataError(
            f"{what}: it was trained on {saved.get('dataset', '?')} data of fingerprint {_short(recorded)}, "
            f"this data's is {_short(fp)}; {fix}"
        )


def load_run_data(
    cfg: Config, run_dir: str, dataset: str | None = None, data_dir: str | None = None, dim: int | None = None
) -> tuple[Dataset, dict[str, Any]]:
    """The data to score the run of config ``cfg`` (in ``run_dir``) on, and what it is.

    Without ``dataset``: the run's own dataset, from ``data_dir`` or else the run's data_dir;
    if the run recorded a fingerprint and this data's differs, a one-line :class:`DataError`.
    With ``dataset`` (the user's explicit choice): that dataset, whatever the run was trained
    on. The returned dict says which data it is (``dataset``, ``data_fingerprint``) and whether
    it is the training data (``same_data_as_training``: true, false, or null where the run
    recorded no fingerprint). ``dim``, the model's input size, must be the data's.
    """
    chosen = dataset or cfg.dataset
    data = load_dataset(chosen, data_dir or cfg.data_dir, image_size=cfg.image_size, max_images=cfg.max_images or None)
    if dim is not None and data.dim != dim:
        raise DataError(
            f"{data.name} from {data.source} has {data.dim} values per image, the model of {run_dir} takes {dim}: "
            "choose a dataset of its image size"
        )
    fp = fingerprint(data)
    if dataset is None:
        check_same_data(
            cfg.to_dict(),
            fp,
            f"will not score {run_dir} on {data.name} from {data.source}",
            "point --data-dir at the data it was trained on, or pass --dataset NAME to score it on other data "
            "on purpose",
        )
    same = None if cfg.data_fingerprint is None else cfg.data_fingerprint == fp
    return data, {"dataset": data.name, "data_fingerprint": fp, "same_data_as_training": same}
