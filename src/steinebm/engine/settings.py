"""Which config keys a run reads: the engine's, the data's, the energy model's, the generator's
where the rule trains one, and those the rule declares
(:func:`~steinebm.learners.registry.register_rule`). A key set away from its default that the run
does not read is named at ``steinebm train``; a run's ``config.yaml``, the report's settings table
and a resume's comparison hold only the keys the run reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from steinebm.engine.config import FIELDS, Config
from steinebm.engine.config_file import from_dict
from steinebm.errors import UserError
from steinebm.learners import registry

__all__ = [
    "ENGINE_SETTINGS",
    "GENERATOR_SETTINGS",
    "RESIZED_DATASETS",
    "settings_used",
    "unused_settings",
    "used_dict",
    "read_values",
    "differing_keys",
]

# The keys the engine reads whatever the rule: the data, the loop, checkpoints and logs, the
# energy's optimizer (every rule has an energy model or discriminator).
ENGINE_SETTINGS = (
    "method", "dataset", "data_dir", "data_fingerprint", "out_dir", "seed", "epochs", "batch_size",
    "lr", "beta1", "beta2", "weight_decay", "lr_decay_from", "n_train", "eval_every", "checkpoint_every",
    "log_every", "max_steps", "threads", "device", "flush_denormal", "adam_impl", "amp", "progress",
    "on_divergence", "rollback_lr_factor", "max_rollbacks", "diverge_growth", "tensorboard", "extra",
)  # fmt: skip
# the datasets read through image_size and max_images
RESIZED_DATASETS = ("celeba", "lsun", "image-folder")
# the generator's keys (steinebm.engine.build.build_generator and its Adam), for a rule that trains one
GENERATOR_SETTINGS = (
    "noise_dim", "gen_lr", "gen_beta1", "gen_weight_decay", "gen_bias", "gen_batchnorm", "gen_bn_stats",
    "gen_bn_eps", "gen_width", "eval_samples",
)  # fmt: skip


def settings_used(cfg: Config) -> frozenset[str]:
    """The config keys a run of ``cfg`` reads: the engine's, the data's, the energy model's (the
    DCGAN discriminator's), the generator's where the rule trains one, and those the rule declares
    (:func:`~steinebm.learners.registry.register_rule`; a rule that declares none reads them all).

    >>> sorted(settings_used(Config(method="cd")) - set(ENGINE_SETTINGS))
    ['cd_k', 'langevin_noise', 'langevin_step', 'model', 'n_hidden']
    """
    entry = registry.rule_entry(cfg.method)
    if entry.settings is None:
        return frozenset(FIELDS)
    keys = set(ENGINE_SETTINGS)
    if cfg.dataset in RESIZED_DATASETS:
        keys |= {"image_size", "max_images"}
    if entry.discriminator:  # the DCGAN discriminator (steinebm.engine.build.build_model)
        keys |= {"conditional", "disc_width"}
    else:
        keys.add("model")
        keys |= {
            "rbm": {"n_hidden"},
            "autoencoder": {"code_dim", "width", "input_dropout"},
            "joint": {"code_dim", "width", "input_dropout", "margin", "head_dropout"},
        }[cfg.model]
    if entry.trains_generator:
        keys |= set(GENERATOR_SETTINGS)
        if cfg.model == "joint" or cfg.conditional:  # a class-conditional generator
            keys.add("gen_labels")
    keys |= set(entry.settings(cfg))
    return frozenset(keys)


def unused_settings(cfg: Config) -> list[str]:
    """The keys ``cfg`` sets away from their defaults that its run does not read."""
    used, default = settings_used(cfg), Config()
    return [k for k in FIELDS if k not in used and getattr(cfg, k) != getattr(default, k)]


def used_dict(cfg: Config) -> dict[str, Any]:
    """:meth:`Config.to_dict` restricted to the keys the run reads (a run's config.yaml)."""
    used = settings_used(cfg)
    return {k: v for k, v in cfg.to_dict().items() if k in used}


def read_values(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config's values of the keys its run reads (a key the config predates at its
    default); a config that cannot be read as a :class:`Config` (another version's, or a method
    of a plugin not loaded here) as it is."""
    try:
        cfg = from_dict(config)
    except UserError:
        return dict(config)
    used = settings_used(cfg)
    return {k: v for k, v in cfg.to_dict().items() if k in used}


def differing_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """The keys, in the order first met, whose values (:func:`read_values`) are not the same in
    every config: the one comparison of configs, used by a resume (the saved config against the
    new one) and by the report's table of settings that differ. A key one run does not read
    differs from any value.

    >>> a = Config(method="cd", cd_k=1).to_dict()
    >>> differing_keys([a, {**a, "cd_k": 5, "epsilon": 0.5}])  # CD does not read epsilon
    ['cd_k']
    """
    values = [read_values(c) for c in configs]
    keys = dict.fromkeys(k for v in values for k in v)
    return [k for k in keys if len({_canonical(v[k]) if k in v else None for v in values}) > 1]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)
