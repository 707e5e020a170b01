"""The training configuration: one dataclass, every key with its default and its check.

Every value is type- and range-checked (:meth:`Config.validate`); a bad one raises a one-line
:class:`ConfigError` naming the key, the value and what is allowed. Reading a config from YAML,
a shipped preset or ``key=value`` overrides is :mod:`steinebm.engine.config_file`; which keys a
run reads is :mod:`steinebm.engine.settings`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from steinebm.data import DATASETS
from steinebm.errors import ConfigError
from steinebm.learners import registry
from steinebm.learners.registry import ENERGY_METHODS, GENERATOR_METHODS, METHODS

__all__ = ["Config", "FIELDS", "METHODS", "ENERGY_METHODS", "GENERATOR_METHODS", "CHOICES", "check_type"]

# METHODS, ENERGY_METHODS (the energy alone) and GENERATOR_METHODS (a generator G(xi; eta) too) are
# the paper's, as steinebm.learners.registry registers them; it holds every registered one (plugins too)
KERNELS = ("rbf", "imq", "constant")
MODELS = ("rbm", "autoencoder", "joint")


# the string fields with a fixed set of values, and those values
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS,
    "model": MODELS,
    "kernel": KERNELS,
    "gen_kernel": (*KERNELS, "feature"),
    "median_over": ("pairs", "all"),
    "log_term": ("m", "m+1"),
    "median_of": ("distance", "squared"),
    "gen_loss": ("mean", "sum"),
    "gen_batchnorm": ("affine", "plain"),
    "gen_bn_stats": ("running", "batch"),
    "normalize": ("m", "kernel_sum"),
    "steincd_optimizer": ("shared", "own"),
    "feature_repulsion": ("exact", "nearest", "none"),
    "feature_bandwidth": ("paper", "authors-mnist"),
    "schedule": ("together", "alternate"),
    "gen_labels": ("drawn", "batch"),
    "feature_codes": ("eval", "batch"),
    "gamma_raise_when": ("real_energy_higher", "real_energy_lower"),
    "on_divergence": ("stop", "rollback"),
    "adam_impl": ("fused", "foreach"),
}


@dataclass
class Config:
    """One training run. Defaults are the authors' MNIST RBM settings (Section 5.1)."""

    method: str = registry.DEFAULT_METHOD  # one of registry.methods(): the paper's METHODS or a plugin's
    dataset: str = "mnist"  # mnist | mnist-embedded | fashion-mnist | idx | cifar10 | celeba | lsun | image-folder
    image_size: int = 64  # celeba, lsun, image-folder: images are cropped and resized to this square
    max_images: int = 0  # celeba, lsun, image-folder: read at most this many (0 = all)
    data_dir: str | None = None  # folder holding the data (else $STEINEBM_DATA, ~/.cache/steinebm)
    # the data's fingerprint (steinebm.data.fingerprint), recorded by training in config.yaml and the
    # checkpoint; where a config gives one, training refuses data with another
    data_fingerprint: str | None = None
    out_dir: str = "runs/steincd"
    seed: int = 0
    model: str = "rbm"  # rbm | autoencoder (Eq. 24) | joint (image-label, Eq. 25)
    n_hidden: int = 10  # l, hidden units of the RBM
    # autoencoder / joint energies and the DCGAN networks for 32 and 64 px images (Section 5.2)
    code_dim: int = 100  # the encoder's code, where the feature kernel lives
    margin: float = 1.0  # m of the joint energy's -max(m, CE)
    conditional: bool = False  # dcgan: generator and discriminator take the label (SteinGAN: model=joint)
    width: int = 0  # the energy's first encoder layer, channels (0 = the paper-sized default)
    gen_width: int = 0  # the DCGAN generator's last hidden layer, channels (0 = 128)
    disc_width: int = 0  # the DCGAN discriminator's first layer, channels (0 = 128)
    epochs: int = 20
    batch_size: int = 100  # m
    lr: float = 3e-4  # Adam
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.0  # L2 on theta
    # CD-k with Langevin (Eq. 11)
    cd_k: int = 1
    langevin_step: float = 1e-2
    langevin_noise: float = 1.0
    # SteinCD (Algorithm 1, Eq. 17) and Stein score matching (Eq. 15)
    epsilon: float = 1e-2
    kernel: str = "rbf"  # one of KERNELS
    bandwidth: Any = "median"  # "median" or a positive float
    median_over: str = "pairs"  # pairs | all
    log_term: str = "m"  # m | m+1
    median_of: str = "distance"  # distance (med^2) | squared (median of squared distances, the authors' code)
    normalize: str = "m"  # m | kernel_sum
    sm_probes: int = 1  # Hyvarinen score matching: Hutchinson probes (0 = exact trace)
    # generators: SteinGAN / SteinCD-GAN(alpha) (Algorithm 2), amortized SVGD, DCGAN
    noise_dim: int = 100
    gen_lr: float = 3e-4
    gen_beta1: float = 0.5
    gen_weight_decay: float = 0.0
    gen_loss: str = "mean"  # the generator's surrogate over the batch: mean (Eq. 21) | sum (the authors' code)
    # the MNIST generator as the authors wrote it: no biases, BatchNorm without scale and shift
    # ("plain"), batch statistics at sampling time too ("batch"), and their BatchNorm epsilon
    gen_bias: bool = True
    gen_batchnorm: str = "affine"  # affine | plain
    gen_bn_stats: str = "running"  # running | batch
    gen_bn_eps: float = 1e-5
    # kernel of the generator's SVGD direction: rbf | imq | constant (no repulsion) | feature (RBF on
    # the energy's encoder code, bandwidth 0.5 med / log m; autoencoder and joint energies)
    gen_kernel: str = "rbf"
    # feature kernel's repulsive term: exact (m^2 encoder products) | nearest (the nearest code's
    # term only, as the authors' CIFAR-10 code: one extra encoder pass) | none (zero, as the
    # authors' MNIST code computes it)
    feature_repulsion: str = "exact"
    # feature kernel's bandwidth: paper (H = (0.5 med / log m)^2) | authors-mnist (the authors' MNIST
    # code: H = median of all m^2 squared code distances / (4 log(m + 1)))
    feature_bandwidth: str = "paper"
    feature_codes: str = "eval"  # the encoder's BatchNorm for the kernel's codes: eval (running stats) | batch
    gamma: float = 0.0  # discount on the generated batch's gradient (Section 5.2)
    gamma_adaptive: float | None = None  # the raised gamma, used while gamma_raise_when holds
    # when gamma_adaptive applies: real_energy_higher (the paper's text: mean f(x+) < mean f(x-))
    # | real_energy_lower (the authors' CIFAR-10 code: mean f(x+) > mean f(x-), the usual state)
    gamma_raise_when: str = "real_energy_higher"
    input_dropout: float = 0.0  # autoencoder/joint energies: dropout on the encoder's input in training
    head_dropout: float = 0.0  # joint energy: dropout on the code before the label head in training
    # SteinGAN's steps: together (Algorithm 2: every batch updates G, then theta) | alternate (the
    # authors' MNIST code: G and theta on alternate batches; theta's step skipped while the generated
    # batch's reconstruction cost exceeds the real one's by skip_margin; gamma raised to
    # gamma_adaptive while the real batch's reconstruction cost is the lower, else theta's learning
    # rate times energy_lr_boost; each rule set by the step before). The logged loss then averages
    # the generator's and the energy's surrogates of the steps in the window.
    schedule: str = "together"
    skip_margin: float | None = 0.5  # schedule=alternate; null = never skip
    energy_lr_boost: float = 1.0  # schedule=alternate
    # the generated batch's labels (model=joint, conditional DCGAN): drawn from the training set's
    # label counts | batch: the real batch's own labels (the authors' MNIST code)
    gen_labels: str = "drawn"
    # every learning rate falls linearly from this epoch (counted from 0) to 1/(epochs - it) of its
    # value in the last epoch (the authors' MNIST code: 50 of 100); null (or >= epochs) = constant.
    # The decay is computed from epochs: resuming with other epochs stretches what is left of it
    lr_decay_from: int | None = None
    alpha: float = 0.0  # SteinCD-GAN(alpha): probability of a SteinCD step
    # SteinCD-GAN: "shared" = one Adam state for theta; "own" = SteinCD steps keep their own Adam
    # state, so their update is not shrunk by the far larger SteinGAN gradients
    steincd_optimizer: str = "shared"
    energy_from: str | None = None  # amortized-svgd: the run whose energy model the generator learns
    # the loop
    n_train: int = 0  # use only the first n training images (0 = all)
    eval_every: int = 1  # epochs between log-likelihood evaluations (0 = only at the end)
    # MNIST generators: at each evaluation, score this many generated images under both MNIST
    # classifiers, and the first 100 as a 10 x 10 grid (saved in out_dir/samples/); 0 = off
    eval_samples: int = 0
    checkpoint_every: int = 0  # steps between checkpoints (0 = at the end of every epoch)
    log_every: int = 50  # steps between training-loss log lines
    max_steps: int = 0  # stop after this many steps in all (0 = no limit; smoke runs)
    threads: int = 0  # torch threads (0 = torch's default)
    device: str = "cpu"
    flush_denormal: bool = True  # subnormal floats computed as zero while training (CPU speed; see train())
    adam_impl: str = "fused"  # fused (one kernel per step) | foreach (torch's default Adam); same maths
    # networks' forward passes in bfloat16 autocast; SVGD and kernel arithmetic stay float32; not with
    # SteinCD (steincd, symmetric-steincd, SteinCD-GAN with alpha > 0), whose update bfloat16 swamps
    amp: bool = False
    progress: bool = True
    # a non-finite loss or parameter: stop (keep the last good checkpoint) | rollback (reload it,
    # multiply every learning rate by rollback_lr_factor and go on, at most max_rollbacks times a run)
    on_divergence: str = "stop"
    rollback_lr_factor: float = 0.5
    max_rollbacks: int = 3
    # also diverged: a part's parameter norm above diverge_growth x its initial one (0 = off); a
    # finite blow-up (lr far too high) passes it by orders of magnitude, normal runs stay far below
    diverge_growth: float = 1000.0
    tensorboard: bool = False  # rank 0 also writes every logged scalar to out_dir/tensorboard
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the run

    def validate(self) -> Config:
        """Check every field's type, then its range, with the checks the method's rule makes of its
        own (its registry entry's ``check``); the first bad one raises a one-line :class:`ConfigError`
        naming the key. Configs built in Python skip :func:`from_dict`'s type checks, so the
        types are checked here again: a string or a bool where a number belongs would otherwise
        fail deep inside training, or (a bool is an int) silently train something else."""
        for key in FIELDS:
            check_type(key, getattr(self, key))

        def bad(key: str, allowed: str) -> ConfigError:
            return registry.invalid(self, key, allowed)

        for key, allowed in (("method", registry.methods()), *CHOICES.items()):
            if getattr(self, key) not in allowed:
                raise bad(key, "choose one of " + ", ".join(allowed))
        rule = registry.rule_entry(self.method)  # what the engine knows of the method's rule
        for key in ("n_hidden", "epochs", "batch_size", "cd_k", "log_every", "code_dim", "noise_dim"):
            if getattr(self, key) < 1:
                raise bad(key, "must be an integer >= 1")
        for key in ("n_train", "eval_every", "checkpoint_every", "max_steps", "threads", "sm_probes"):
            if getattr(self, key) < 0:
                raise bad(key, "must be an integer >= 0")
        if self.threads > 1024:
            raise bad("threads", "must be an integer in [0, 1024] (0 = torch's default)")
        if not 0 <= self.seed < 2**32:  # torch seeds are 64-bit; the loop derives larger seeds from it
            raise bad("seed", "must be an integer in [0, 2**32)")
        for key in ("width", "gen_width", "disc_width"):
            if getattr(self, key) < 0:
                raise bad(key, "must be an integer >= 0 (0 = the default width)")
        if self.max_images < 0:
            raise bad("max_images", "must be an integer >= 0 (0 = all)")
        if self.max_rollbacks < 1:
            raise bad("max_rollbacks", "must be an integer >= 1 (on_divergence=stop never rolls back)")
        # comparisons are written so that NaN fails them
        for key in ("lr", "gen_lr", "langevin_step", "epsilon"):
            v = getattr(self, key)
            if not (v > 0 and math.isfinite(v)):
                raise bad(key, "must be a finite number > 0")
        for key in ("weight_decay", "langevin_noise", "gen_weight_decay"):
            v = getattr(self, key)
            if not (v >= 0 and math.isfinite(v)):
                raise bad(key, "must be a finite number >= 0")
        for key in ("beta1", "beta2", "gen_beta1", "gamma", "input_dropout", "head_dropout"):
            if not 0 <= getattr(self, key) < 1:
                raise bad(key, "must be in [0, 1)")
        if not 0.0 <= self.alpha <= 1.0:
            raise bad("alpha", "must be in [0, 1]")
        if not (self.diverge_growth == 0.0 or 1.0 < self.diverge_growth < math.inf):
            raise bad("diverge_growth", "must be 0 (off) or a finite number > 1")
        if self.eval_samples and (self.eval_samples < 10 or not rule.trains_generator):
            raise bad("eval_samples", "must be 0, or >= 10 with a method that trains a generator")
        if not 0.0 < self.gen_bn_eps < 1.0:
            raise bad("gen_bn_eps", "must be in (0, 1)")
        if not 0.0 < self.rollback_lr_factor < 1.0:
            raise bad("rollback_lr_factor", "must be in (0, 1): a rollback lowers the learning rate")
        if self.gamma_adaptive is not None and not self.gamma <= self.gamma_adaptive < 1.0:
            raise bad("gamma_adaptive", "must be null or in [gamma, 1)")
        if not math.isfinite(self.margin):
            raise bad("margin", "must be a finite number")
        if self.bandwidth != "median":
            if (
                isinstance(self.bandwidth, bool)
                or not isinstance(self.bandwidth, (int, float))
                or not (self.bandwidth > 0 and math.isfinite(self.bandwidth))
            ):
                raise bad("bandwidth", "'median' or a finite number > 0")
        if self.conditional and not rule.discriminator:  # a setting of the DCGAN discriminator
            raise bad("conditional", "is for the DCGAN baseline; a conditional SteinGAN uses model=joint")
        if rule.check is not None:  # the rule's own (steinebm.learners.registry.register_rule)
            rule.check(self)
        if self.skip_margin is not None and not math.isfinite(self.skip_margin):
            raise bad("skip_margin", "must be null or a finite number")
        if not (self.energy_lr_boost > 0 and math.isfinite(self.energy_lr_boost)):
            raise bad("energy_lr_boost", "must be a finite number > 0")
        if self.gen_labels == "batch" and not (self.model == "joint" or self.conditional):
            raise bad("gen_labels", "batch is for a class-conditional generator (model=joint or conditional=true)")
        if self.lr_decay_from is not None and self.lr_decay_from < 0:
            raise bad("lr_decay_from", "must be null or an epoch >= 0 (from 0; none at or beyond epochs)")
        if self.gen_kernel == "feature" and self.model == "rbm":
            raise bad("gen_kernel", "the feature kernel needs an energy with an encoder: model=autoencoder or joint")
        if self.image_size not in (32, 64):
            raise bad("image_size", "the DCGAN networks take 32 or 64 px images")
        if self.n_hidden > 4096:
            raise bad("n_hidden", "must be <= 4096 (beyond 24 the log-likelihood is estimated by AIS)")
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", self.device):
            raise bad("device", "cpu, cuda, cuda:N or mps")
        if not self.out_dir.strip() or "\0" in self.out_dir:
            raise bad("out_dir", "a folder for the run")
        for key in ("data_dir", "energy_from"):
            if "\0" in (getattr(self, key) or ""):
                raise bad(key, "a folder path without NUL characters")
        if self.data_fingerprint is not None and not re.fullmatch(r"[0-9a-f]{64}", self.data_fingerprint):
            raise bad("data_fingerprint", "null, or the 64 hex digits that a run's config.yaml records")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}

# what each declared field type accepts, as the error message says it
WANTED = {
    "int": "an integer",
    "int | None": "an integer or null",
    "float": "a number",
    "float | None": "a number or null",
    "str": "a string",
    "str | None": "a path or null",
    "bool": "true or false",
    "dict[str, Any]": "a mapping with string keys",
}
WANTED_BY_KEY = {"data_fingerprint": "64 hex digits or null"}  # where the type's wording does not fit


def _type_ok(declared: str, value: Any) -> bool:
    """Whether ``value`` fits a field declared as ``declared``; a bool is no number here, though
    Python counts it as an int. Undeclared types (bandwidth's Any) are left to validate()."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if declared == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if declared == "int | None":
        return value is None or (isinstance(value, int) and not isinstance(value, bool))
    if declared == "float":
        return number
    if declared == "float | None":
        return value is None or number
    if declared == "str":
        return isinstance(value, str)
    if declared == "str | None":
        return value is None or isinstance(value, str)
    if declared == "bool":
        return isinstance(value, bool)
    if declared == "dict[str, Any]":
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return True


def check_type(key: str, value: Any) -> None:
    """A one-line ConfigError unless ``value`` fits the declared type of field ``key``."""
    declared = str(FIELDS[key].type)
    if not _type_ok(declared, value):
        raise ConfigError(
            f"config value {key}={value!r} is invalid: must be {WANTED_BY_KEY.get(key, WANTED[declared])}"
        )
