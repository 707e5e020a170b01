"""Reading a config: a YAML file or a shipped preset by name, ``key=value`` overrides, and the
type coercion and key suggestions that make a bad value or an unknown key a one-line
:class:`ConfigError` (an unknown key names the nearest valid one).

>>> cfg = load_config("fig1a-steincd", ["lr=0.01", "out_dir=runs/x"])
>>> cfg.method, cfg.lr, cfg.out_dir
('steincd', 0.01, 'runs/x')
>>> suggest_key("learning_rate")
'lr'
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml

from steinebm.engine.config import FIELDS, WANTED, Config, check_type
from steinebm.errors import ConfigError, first_line

__all__ = ["PRESETS", "presets", "preset_path", "load_config", "apply_overrides", "from_dict", "suggest_key", "ALIASES"]

PRESETS = Path(__file__).resolve().parents[1] / "configs"  # the paper's presets, shipped with the package


def _coerce(key: str, value: Any) -> Any:
    """Check value against the declared type of field ``key`` (ints pass as floats)."""
    declared = FIELDS[key].type
    if declared in ("float", "float | None") and isinstance(value, str):
        try:  # YAML 1.1 reads 3e-4 (no dot) as a string
            value = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"config value {key}={value!r} is invalid: must be {WANTED[declared]}") from None
    check_type(key, value)
    if declared in ("float", "float | None") and value is not None:
        try:
            value = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ConfigError(f"config value {key}={value!r:.40} is invalid: too large for a number") from None
    if key == "bandwidth" and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"config value bandwidth={value!r:.40} is invalid: too large for a number") from None
    if key == "extra":
        _check_acyclic(value)
    return value


def _check_acyclic(value: Any, depth: int = 0, seen: tuple[int, ...] = ()) -> None:
    """``extra`` is saved with every checkpoint: refuse values that refer to themselves (YAML
    anchors can) or nest absurdly deep, which would fail only when the run is saved."""
    if depth > 50:
        raise ConfigError("config value extra is invalid: nested more than 50 levels deep")
    if isinstance(value, (dict, list)):
        if id(value) in seen:
            raise ConfigError("config value extra is invalid: it refers to itself (a YAML alias loop)")
        items = value.values() if isinstance(value, dict) else value
        for item in items:
            _check_acyclic(item, depth + 1, (*seen, id(value)))


# names other code uses for a key of ours, tried before a spelling match
ALIASES = {
    "learning_rate": "lr",
    "lr_energy": "lr",
    "energy_lr": "lr",
    "generator_lr": "gen_lr",
    "gen_learning_rate": "gen_lr",
    "lr_g": "gen_lr",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "batch": "batch_size",
    "batchsize": "batch_size",
    "num_hidden": "n_hidden",
    "hidden": "n_hidden",
    "eps": "epsilon",
    "step_size": "langevin_step",
    "k": "cd_k",
    "l2": "weight_decay",
    "output_dir": "out_dir",
    "outdir": "out_dir",
    "data": "data_dir",
    "z_dim": "noise_dim",
    "nz": "noise_dim",
}


def suggest_key(key: str) -> str | None:
    """The valid key a mistyped or foreign ``key`` most likely means: a known alias, a close
    spelling, or the one key sharing a word with it; None if nothing fits."""
    if key in ALIASES:
        return ALIASES[key]
    near = difflib.get_close_matches(key, list(FIELDS), n=1)
    if near:
        return near[0]
    words = set(key.lower().split("_"))
    sharing = [f for f in FIELDS if words & set(f.split("_"))]
    return sharing[0] if len(sharing) == 1 else None


def _check_key(key: str) -> None:
    if key not in FIELDS:
        near = suggest_key(key)
        fields = "; the keys are the fields of steinebm.engine.config.Config (docs/api.md)"
        hint = f"; did you mean {near!r}?" if near else fields
        raise ConfigError(f"unknown config key {key!r}{hint}")


def from_dict(values: dict[str, Any], base: Config | None = None) -> Config:
    """A :class:`Config` from a mapping of its keys (``base``, else the defaults, for the rest),
    each key and value type-checked; :meth:`Config.validate` checks the ranges."""
    cfg = dataclasses.replace(base) if base is not None else Config()
    for key, value in values.items():
        _check_key(str(key))
        setattr(cfg, key, _coerce(key, value))
    return cfg


def presets() -> list[str]:
    """The names of the shipped presets (``configs/NAME.yaml``), sorted."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of the shipped preset ``name`` (with or without ``.yaml``), else a one-line error."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    path = PRESETS / f"{stem}.yaml"
    if "/" in stem or "\\" in stem or not path.is_file():
        raise ConfigError(f"no config file or preset {name!r}: give a YAML file or one of {', '.join(presets())}")
    return path


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (a mapping of Config fields), apply ``key=value`` overrides, validate.
    ``path`` is a file, or the name of a shipped preset (``fig1a-steincd``; see :func:`presets`)."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists() and p.parent == Path("."):  # a bare name: a shipped preset
            p = preset_path(str(path))
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config {p} is not UTF-8 text; save it as UTF-8") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config {p} is not valid YAML ({first_line(e)})") from None
        except RecursionError:
            raise ConfigError(f"config {p} nests too deeply to read; flatten it") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {p} must be a mapping of key: value, got {type(loaded).__name__}")
        values.update(loaded)
    cfg = from_dict(values)
    return apply_overrides(cfg, overrides or []).validate()


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``cfg`` with ``key=value`` strings applied (values parsed as YAML; string fields keep the text)."""
    values: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        _check_key(key)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, RecursionError):
            value = raw
        if FIELDS[key].type in ("str", "str | None") and value is not None and not isinstance(value, str):
            value = raw  # e.g. out_dir=123 or log_term=m+1 stay strings
        values[key] = value
    return from_dict(values, cfg)
