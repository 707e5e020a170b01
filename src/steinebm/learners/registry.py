"""Which rule each ``method`` builds: one entry per learning rule, holding all that the engine
knows of it.

A rule is registered with a name (the config's ``method``) and either a function that builds it
from a :class:`RuleContext` (the run's config, its energy model, its generator if any, and
builders for kernels and optimizers) or, for a rule on the energy alone, a function that makes
its :class:`~steinebm.learners.base.Learner` (the entry then builds the
:class:`~steinebm.learners.rules.EnergyRule` around it). The entry also says whether the rule
trains a generator (then the engine builds one), whether its energy model is the DCGAN
discriminator, the config keys it reads, and its own config checks. The engine and the config's
validation look the method up here and never name a rule themselves.

A rule of your own is one module plus one entry::

    # my_rules.py
    from steinebm.learners.base import Learner, contrastive_loss
    from steinebm.learners.registry import invalid, register_rule


    class MyCD(Learner):
        def __init__(self, k: int) -> None:
            self.k = k

        def loss(self, energy, x_pos, generator=None):
            x_neg = ...  # the negatives of k steps from x_pos
            loss, f_pos, f_neg = contrastive_loss(energy, x_pos, x_neg)
            return loss, {}


    def check(cfg):
        if cfg.cd_k > 100:
            raise invalid(cfg, "cd_k", "my-cd takes at most 100 steps")


    register_rule("my-cd", learner=lambda ctx: MyCD(ctx.cfg.cd_k), settings=("cd_k",), check=check)

``steinebm train method=my-cd`` finds it when the module that registers it is named in the
environment variable ``STEINEBM_PLUGINS`` (module names, comma-separated), which is imported
whenever the configuration is. A rule that trains more than the energy passes ``build`` instead
(a :class:`~steinebm.learners.rules.Rule` from the context) and ``trains_generator=True``.
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
from steinebm.errors import ConfigError, UserError, first_line
from steinebm.learners.base import Learner
from steinebm.learners.cd import CD
from steinebm.learners.rules import (
    AlternatingSteinGANRule,
    AmortizedSVGDRule,
    DCGANRule,
    EnergyRule,
    GeneratedBatch,
    Rule,
    SteinGANRule,
)
from steinebm.learners.score_matching import HyvarinenScoreMatching, SteinScoreMatching
from steinebm.learners.steincd import SteinCD, SymmetricSteinCD
from steinebm.learners.steingan import AlternatingSchedule, AmortizedSVGD, SteinGAN

__all__ = [
    "RuleContext",
    "RuleEntry",
    "register_rule",
    "rule_entry",
    "methods",
    "energy_methods",
    "generator_methods",
    "trains_generator",
    "invalid",
    "load_plugins",
    "kernel_settings",
    "DEFAULT_METHOD",
    "METHODS",
    "ENERGY_METHODS",
    "GENERATOR_METHODS",
]

PLUGINS_VARIABLE = "STEINEBM_PLUGINS"


@dataclass
class RuleContext:
    """What a rule is built from. ``kernel(name)`` builds a kernel by its config name (None: the
    config's ``kernel``); ``adam(module, gen=False)`` the config's Adam for the energy or the
    generator; ``energy_learner()`` the learner of this energy-only method (its entry's
    ``learner``, made through the engine); ``load_energy(run)`` a trained energy model; ``m``
    this process's share of the batch."""

    cfg: Any
    model: nn.Module
    generator: nn.Module | None
    ranks: Ranks
    m: int
    kernel: Callable[[str | None], Kernel]
    adam: Callable[..., torch.optim.Optimizer]
    energy_learner: Callable[[], Learner]
    load_energy: Callable[[str], nn.Module]

    def draw(self) -> GeneratedBatch:
        """The generator's batches for this run (its labels as the config's ``gen_labels`` says)."""
        if self.generator is None:
            raise UserError(f"method={self.cfg.method} needs a generator")
        return GeneratedBatch(self.generator, self.m, self.cfg.gen_labels)


# what a rule reads of the config, given the config (its keys may depend on other keys' values)
Settings = Callable[[Any], Iterable[str]]
# a rule's own config checks: raises a one-line ConfigError (see invalid()) for a value it refuses
Check = Callable[[Any], None]


@dataclass(frozen=True)
class RuleEntry:
    """A registered rule: how to build it (``build(ctx)``), the learner of a rule on the energy
    alone (``learner(ctx)``; None for a rule that trains more), whether it trains a generator,
    whether its energy model is the DCGAN discriminator, the config keys it reads
    (``settings(cfg)``; None: not declared, so every key counts as read) and its own config
    checks (``check(cfg)``)."""

    build: Callable[[RuleContext], Rule]
    trains_generator: bool = False
    settings: Settings | None = None
    learner: Callable[[RuleContext], Learner] | None = None
    discriminator: bool = False
    check: Check | None = None


_RULES: dict[str, RuleEntry] = {}


def _energy_rule(ctx: RuleContext) -> Rule:
    """The rule of an entry with a ``learner``: that learner's surrogate on the energy alone."""
    return EnergyRule(ctx.energy_learner(), ctx.model, ctx.adam(ctx.model), ctx.ranks)


def register_rule(
    name: str,
    build: Callable[[RuleContext], Rule] | None = None,
    *,
    learner: Callable[[RuleContext], Learner] | None = None,
    trains_generator: bool = False,
    discriminator: bool = False,
    settings: Settings | Iterable[str] | None = None,
    check: Check | None = None,
) -> None:
    """Make ``method=name`` build ``build(ctx)``, or, given only ``learner``, the
    :class:`~steinebm.learners.rules.EnergyRule` that trains the energy with ``learner(ctx)``.
    ``trains_generator``: the run has a generator; ``discriminator``: the energy model is the
    DCGAN discriminator (``conditional``, ``disc_width``) instead of the config's ``model``;
    ``settings``: the config keys the rule reads beyond the engine's own (the data, the loop,
    the energy model, the generator), as keys or a function of the config. A key the rule does
    not read is then left out of the run's config.yaml and report, and setting it is flagged;
    ``check(cfg)``: the rule's own config checks, run by
    :meth:`~steinebm.engine.config.Config.validate` after its general ones of each key's type
    and choices (raise :func:`invalid`)."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"a rule's name is a non-empty word, got {name!r}")
    if build is None and learner is None:
        raise ValueError(f"rule {name!r} needs build (a rule from the context) or learner (an energy-only rule)")
    if settings is not None and not callable(settings):
        keys = tuple(settings)
        settings = lambda cfg: keys  # noqa: E731
    entry = RuleEntry(build or _energy_rule, trains_generator, settings, learner, discriminator, check)
    _RULES[name] = entry


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


def energy_methods() -> tuple[str, ...]:
    """Every registered method that trains the energy alone (no generator), the paper's first."""
    return tuple(m for m in methods() if not _RULES[m].trains_generator)


def generator_methods() -> tuple[str, ...]:
    """Every registered method that trains a generator too, the paper's first."""
    return tuple(m for m in methods() if _RULES[m].trains_generator)


def trains_generator(name: str) -> bool:
    """Whether method ``name`` trains a generator too (the engine then builds one)."""
    load_plugins()
    return name in _RULES and _RULES[name].trains_generator


def invalid(cfg: Any, key: str, allowed: str) -> ConfigError:
    """The one-line error of a rule's check that refuses the value of ``key``: it names the key,
    its value and what is allowed, as every config error does."""
    return ConfigError(f"config value {key}={getattr(cfg, key)!r} is invalid: {allowed}")


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
            first = first_line(e)
            raise UserError(f"{PLUGINS_VARIABLE} names {module!r}, which failed to import ({first})") from None


# --- the paper's rules ---------------------------------------------------------------------------


def _cd(ctx: RuleContext) -> Learner:
    cfg = ctx.cfg
    return CD(cfg.cd_k, cfg.langevin_step, cfg.langevin_noise)


def _steincd(ctx: RuleContext) -> Learner:
    return SteinCD(ctx.cfg.epsilon, ctx.kernel(None), ctx.cfg.normalize)


def _symmetric_steincd(ctx: RuleContext) -> Learner:
    return SymmetricSteinCD(ctx.cfg.epsilon, ctx.kernel(None), ctx.cfg.normalize)


def _stein_score_matching(ctx: RuleContext) -> Learner:
    return SteinScoreMatching(ctx.kernel(None), ctx.cfg.normalize)


def _score_matching(ctx: RuleContext) -> Learner:
    return HyvarinenScoreMatching(ctx.cfg.sm_probes)


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


# --- the checks each makes of the config -------------------------------------------------------------

# the messages of the refusals several rules share
_ALTERNATE = "alternate is SteinGAN's (method=steingan, alpha=0) on model=autoencoder or joint"
_JOINT = "the joint image-label energy is trained by SteinGAN (method=steingan, alpha=0)"
# measured against float32 at epsilon = 1e-2: under amp the SteinCD gradient's relative error was 7
# on a small autoencoder energy (cosine 0.03) and 0.37 on the MNIST RBM; CD's was 0.16 and 0.01,
# Stein score matching's 0.14 and 0.01
_STEINCD_AMP = (
    "SteinCD's update is the difference of two gradients epsilon apart, which bfloat16 rounding swamps: use amp=false"
)


def _no_alternate(cfg: Any) -> None:
    """The alternating schedule is SteinGAN's alone."""
    if cfg.schedule == "alternate":
        raise invalid(cfg, "schedule", _ALTERNATE)


def _no_joint(cfg: Any) -> None:
    """The joint image-label energy needs a rule that draws labelled negatives."""
    if cfg.model == "joint":
        raise invalid(cfg, "model", _JOINT)


def _joint_without_steincd(cfg: Any) -> None:
    """A generator's rule trains the joint energy without SteinCD's steps, which take no labels."""
    if cfg.model == "joint" and cfg.alpha > 0:
        raise invalid(cfg, "model", _JOINT)


def _steincd_amp(cfg: Any) -> None:
    if cfg.amp:
        raise invalid(cfg, "amp", _STEINCD_AMP)


def _particles(cfg: Any) -> None:
    """SVGD's phi (and a batch statistic) needs two particles at least."""
    if cfg.batch_size < 2:
        raise invalid(cfg, "batch_size", "SVGD needs at least 2 particles per batch")


def _checks(*checks: Check) -> Check:
    """One check that makes ``checks`` in order (the first refusal raises)."""

    def check(cfg: Any) -> None:
        for c in checks:
            c(cfg)

    return check


def _steingan_check(cfg: Any) -> None:
    if cfg.schedule == "alternate" and (cfg.alpha > 0 or cfg.model not in ("autoencoder", "joint")):
        raise invalid(cfg, "schedule", _ALTERNATE)
    _joint_without_steincd(cfg)
    if cfg.alpha > 0:  # SteinCD-GAN's SteinCD steps
        _steincd_amp(cfg)
    _particles(cfg)


def _amortized_svgd_check(cfg: Any) -> None:
    _no_alternate(cfg)
    _joint_without_steincd(cfg)
    if not cfg.energy_from:
        raise invalid(cfg, "energy_from", "method=amortized-svgd needs the run folder of a trained energy model")
    _particles(cfg)


for _name, _learner, _settings, _check in (
    ("cd", _cd, ("cd_k", "langevin_step", "langevin_noise"), _checks(_no_alternate, _no_joint)),
    (
        "steincd",
        _steincd,
        lambda cfg: ("epsilon", *_svgd_settings(cfg)),
        _checks(_no_alternate, _no_joint, _steincd_amp, _particles),
    ),
    (
        "symmetric-steincd",
        _symmetric_steincd,
        lambda cfg: ("epsilon", *_svgd_settings(cfg)),
        _checks(_no_alternate, _no_joint, _steincd_amp, _particles),
    ),
    ("stein-score-matching", _stein_score_matching, _svgd_settings, _checks(_no_alternate, _no_joint, _particles)),
    ("score-matching", _score_matching, ("sm_probes",), _checks(_no_alternate, _no_joint, _particles)),
):
    register_rule(_name, learner=_learner, settings=_settings, check=_check)
register_rule("steingan", _steingan, trains_generator=True, settings=_steingan_settings, check=_steingan_check)
register_rule(
    "amortized-svgd",
    _amortized_svgd,
    trains_generator=True,
    settings=lambda cfg: ("energy_from", "gen_kernel", *kernel_settings(cfg.gen_kernel), "normalize", "gen_loss"),
    check=_amortized_svgd_check,
)
register_rule(
    "dcgan",
    _dcgan,
    trains_generator=True,
    discriminator=True,
    settings=(),
    check=_checks(_no_alternate, _no_joint, _particles),
)

# the paper's methods (registered above, before any plugin), and the one a config starts from
METHODS: tuple[str, ...] = tuple(_RULES)
ENERGY_METHODS: tuple[str, ...] = tuple(m for m in METHODS if not _RULES[m].trains_generator)
GENERATOR_METHODS: tuple[str, ...] = tuple(m for m in METHODS if _RULES[m].trains_generator)
DEFAULT_METHOD = "steincd"  # SteinCD (Algorithm 1)
