"""Which rule each ``method`` builds: one entry per learning rule.

A rule is registered with a name (the config's ``method``), a function that builds it from a
:class:`RuleContext` (the run's config, its energy model, its generator if any, and builders for
kernels and optimizers), and whether it trains a generator (then the engine builds one). The
engine looks the method up here and never names a rule itself.

A rule of your own, from outside the package::

    from steinebm.learners.registry import register_rule
    from steinebm.learners.rules import EnergyRule

    register_rule("my-cd", lambda ctx: EnergyRule(MyLearner(), ctx.model, ctx.adam(ctx.model), ctx.ranks))

``steinebm train method=my-cd`` finds it when the module that registers it is named in the
environment variable ``STEINEBM_PLUGINS`` (module names, comma-separated), which is imported
whenever the configuration is.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steinebm.core.distributed import Ranks
from steinebm.core.kernels import Kernel
from steinebm.errors import UserError
from steinebm.learners.base import Learner
from steinebm.learners.rules import (
    AlternatingSteinGANRule,
    AmortizedSVGDRule,
    DCGANRule,
    EnergyRule,
    GeneratedBatch,
    Rule,
    SteinGANRule,
)
from steinebm.learners.steingan import AlternatingSchedule, AmortizedSVGD, SteinGAN

__all__ = [
    "RuleContext",
    "RuleEntry",
    "register_rule",
    "rule_entry",
    "methods",
    "trains_generator",
    "load_plugins",
    "kernel_settings",
]

PLUGINS_VARIABLE = "STEINEBM_PLUGINS"


@dataclass
class RuleContext:
    """What a rule is built from. ``kernel(name)`` builds a kernel by its config name (None: the
    config's ``kernel``); ``adam(module, gen=False)`` the config's Adam for the energy or the
    generator; ``energy_learner(cfg)`` the learner of an energy-only method; ``load_energy(run)``
    a trained energy model; ``m`` this process's share of the batch."""

    cfg: Any
    model: nn.Module
    generator: nn.Module | None
    ranks: Ranks
    m: int
    kernel: Callable[[str | None], Kernel]
    adam: Callable[..., torch.optim.Optimizer]
    energy_learner: Callable[[Any], Learner]
    load_energy: Callable[[str], nn.Module]

    def draw(self) -> GeneratedBatch:
        """The generator's batches for this run (its labels as the config's ``gen_labels`` says)."""
        if self.generator is None:
            raise UserError(f"method={self.cfg.method} needs a generator")
        return GeneratedBatch(self.generator, self.m, self.cfg.gen_labels)


# what a rule reads of the config, given the config (its keys may depend on other keys' values)
Settings = Callable[[Any], Iterable[str]]


@dataclass(frozen=True)
class RuleEntry:
    """A registered rule: how to build it, whether it trains a generator, and the config keys
    it reads (``settings(cfg)``; None: not declared, so every key counts as read)."""

    build: Callable[[RuleContext], Rule]
    trains_generator: bool
    settings: Settings | None = None


_RULES: dict[str, RuleEntry] = {}


def register_rule(
    name: str,
    build: Callable[[RuleContext], Rule],
    trains_generator: bool = False,
    settings: Settings | Iterable[str] | None = None,
) -> None:
    """Make ``method=name`` build ``build(ctx)``; ``trains_generator``: the run has a generator;
    ``settings``: the config keys the rule reads beyond the engine's own (the data, the loop,
    the energy model, the generator), as keys or a function of the config. A key the rule does
    not read is then left out of the run's config.yaml and report, and setting it is flagged."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"a rule's name is a non-empty word, got {name!r}")
    if settings is not None and not callable(settings):
        keys = tuple(settings)
        settings = lambda cfg: keys  # noqa: E731
    _RULES[name] = RuleEntry(build, trains_generator, settings)


def rule_entry(name: str) -> RuleEntry:
    """The registered rule ``name``, else a one-line error listing the registered ones."""
    load_plugins()
    if name not in _RULES:
        raise UserError(f"no learning rule is registered as method={name!r}; choose one of {', '.join(_RULES)}")
    return _RULES[name]


def methods() -> tuple[str, ...]:
    """Every registered method, the paper's first (plugins loaded first)."""
    load_plugins()
    return tuple(_RULES)


def trains_generator(name: str) -> bool:
    """Whether method ``name`` trains a generator too (the engine then builds one)."""
    load_plugins()
    return name in _RULES and _RULES[name].trains_generator


_LOADED: set[str] = set()


def load_plugins() -> None:
    """Import the modules named in ``STEINEBM_PLUGINS`` (each registers its rules), each once.
    Called when a method is first looked up, so a plugin may import any part of steinebm."""
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
        if module in _LOADED:
            continue
        _LOADED.add(module)  # before the import: a plugin that looks up methods does not recurse
        try:
            importlib.import_module(module)
        except Exception as e:  # any failure of a user's module is its own one-line error
            _LOADED.discard(module)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{PLUGINS_VARIABLE} names {module!r}, which failed to import ({first})") from None


# --- the paper's rules ---------------------------------------------------------------------------


def _energy_only(ctx: RuleContext) -> Rule:
    return EnergyRule(ctx.energy_learner(ctx.cfg), ctx.model, ctx.adam(ctx.model), ctx.ranks)


def _steingan(ctx: RuleContext) -> Rule:
    cfg, model, G = ctx.cfg, ctx.model, ctx.generator
    assert G is not None
    opt, opt_g = ctx.adam(model), ctx.adam(G, gen=True)
    sg = SteinGAN(
        ctx.kernel(cfg.gen_kernel),
        cfg.gamma,
        cfg.gamma_adaptive,
        cfg.alpha,
        cfg.epsilon,
        ctx.kernel(None),
        cfg.normalize,
        cfg.gamma_raise_when,
        cfg.gen_loss,
        ctx.ranks,
    )
    if cfg.schedule == "alternate":
        schedule = AlternatingSchedule(cfg.gamma, cfg.gamma_adaptive or cfg.gamma, cfg.energy_lr_boost, cfg.skip_margin)
        return AlternatingSteinGANRule(sg, schedule, model, G, opt, opt_g, ctx.draw(), ctx.ranks)
    # A SteinCD gradient is about eps times a SteinGAN one (hundreds of times smaller on the MNIST
    # RBM), so through one shared Adam state the SteinCD steps of a mix barely move theta.
    opt_cd = ctx.adam(model) if cfg.steincd_optimizer == "own" and 0.0 < cfg.alpha < 1.0 else None
    return SteinGANRule(sg, model, G, opt, opt_g, ctx.draw(), ctx.ranks, opt_cd)


def _amortized_svgd(ctx: RuleContext) -> Rule:
    """A generator for a fixed energy: theta comes from another run and is not updated."""
    cfg, model, G = ctx.cfg, ctx.model, ctx.generator
    assert G is not None
    if not cfg.energy_from:
        raise UserError("method=amortized-svgd needs energy_from=RUN_DIR (a trained energy model to sample)")
    source = ctx.load_energy(cfg.energy_from)
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError:
        raise UserError(
            f"energy_from={cfg.energy_from} holds a different model ({type(source).__name__}); "
            "the model settings and the data must match that run"
        ) from None
    model.requires_grad_(False)
    amortized = AmortizedSVGD(ctx.kernel(cfg.gen_kernel), cfg.normalize, cfg.gen_loss, ctx.ranks)
    return AmortizedSVGDRule(amortized, model, G, ctx.adam(G, gen=True), ctx.draw(), ctx.ranks)


def _dcgan(ctx: RuleContext) -> Rule:
    G = ctx.generator
    assert G is not None
    return DCGANRule(ctx.model, G, ctx.adam(ctx.model), ctx.adam(G, gen=True), ctx.draw(), ctx.ranks)


# --- the settings each reads -----------------------------------------------------------------------


def kernel_settings(name: str) -> tuple[str, ...]:
    """The config keys the kernel called ``name`` in a config reads (:func:`steinebm.engine.build.build_kernel`)."""
    return {
        "rbf": ("bandwidth", "median_over", "log_term", "median_of"),
        "imq": ("bandwidth",),
        "feature": ("feature_repulsion", "feature_bandwidth", "feature_codes"),
    }.get(name, ())


def _svgd_settings(cfg: Any) -> tuple[str, ...]:
    return ("kernel", "normalize", *kernel_settings(cfg.kernel))


def _steingan_settings(cfg: Any) -> list[str]:
    keys = ["gen_kernel", *kernel_settings(cfg.gen_kernel), "normalize", "gen_loss", "gamma", "gamma_adaptive"]
    keys += ["alpha", "schedule"]
    if cfg.schedule == "alternate":  # the schedule, not the adaptive rule, raises gamma
        keys += ["skip_margin", "energy_lr_boost"]
    elif cfg.gamma_adaptive is not None:
        keys.append("gamma_raise_when")
    if cfg.alpha > 0:  # SteinCD-GAN: SteinCD's steps
        keys += ["epsilon", "kernel", *kernel_settings(cfg.kernel)]
        if cfg.alpha < 1:
            keys.append("steincd_optimizer")
    return keys


for _name, _settings in (
    ("cd", ("cd_k", "langevin_step", "langevin_noise")),
    ("steincd", lambda cfg: ("epsilon", *_svgd_settings(cfg))),
    ("symmetric-steincd", lambda cfg: ("epsilon", *_svgd_settings(cfg))),
    ("stein-score-matching", _svgd_settings),
    ("score-matching", ("sm_probes",)),
):
    register_rule(_name, _energy_only, settings=_settings)
register_rule("steingan", _steingan, trains_generator=True, settings=_steingan_settings)
register_rule(
    "amortized-svgd",
    _amortized_svgd,
    trains_generator=True,
    settings=lambda cfg: ("energy_from", "gen_kernel", *kernel_settings(cfg.gen_kernel), "normalize", "gen_loss"),
)
register_rule("dcgan", _dcgan, trains_generator=True, settings=())
