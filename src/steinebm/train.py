"""The training loop: data order, optimizer steps, evaluation, checkpoints, logs, resume.

The maths lives in the learners; this file only moves batches and state around.
A run folder holds ``config.yaml``, ``metrics.jsonl`` (one JSON object per line),
``checkpoint.pt`` (one dict: modules, optimizers with their learning rates, counters, RNG state
and config) and, with ``tensorboard=true``, ``tensorboard/`` (the same scalars as event files).
Files are replaced atomically (temp file, fsync, rename, fsync of the folder), so a kill at any
moment leaves the last complete checkpoint readable and a resumed run ends bit-identical (on the
CPU) to one never interrupted. Before the first step the folder is checked for writability and
for room for two checkpoints, so a full disk is reported at the start, not hours in.

A non-finite loss or parameter stops the run at that step (``on_divergence=stop``) or, with
``on_divergence=rollback``, reloads the last checkpoint, lowers every learning rate by
``rollback_lr_factor`` and goes on, at most ``max_rollbacks`` times a run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from .ais import ais_log_partition
from .checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    PROBE_PREFIX,
    VERSION,
    atomic_write,
    fsync_dir,
    load_checkpoint,
    load_latest,
    remove_stale_temps,
    save_checkpoint,
)
from .config import GENERATOR_METHODS, Config, from_dict
from .data import Dataset, load_dataset
from .distributed import SINGLE, Ranks, from_env
from .energies import GaussianBernoulliRBM
from .energies.autoencoder import AutoencoderEnergy
from .energies.joint import JointAutoencoderEnergy
from .errors import DivergenceError, UserError
from .generators import (
    LabelSampler,
    MNISTConditionalDiscriminator,
    MNISTConditionalGenerator,
    MNISTDiscriminator,
    MNISTGenerator,
)
from .image_nets import (
    IMAGE_SIZES,
    ConditionalDCGANDiscriminator,
    ConditionalDCGANGenerator,
    DCGANDiscriminator,
    DCGANGenerator,
)
from .kernels import IMQ, RBF, ConstantKernel, FeatureKernel, Kernel
from .learners import CD, HyvarinenScoreMatching, Learner, SteinCD, SteinScoreMatching, SymmetricSteinCD
from .learners.steingan import AlternatingSchedule, AmortizedSVGD, DCGANLoss, SteinGAN
from .metrics import EXACT_MAX_HIDDEN, average_log_likelihood, mean_negative_energy
from .provenance import check_same_data, record_data

__all__ = [
    "train",
    "build_model",
    "build_generator",
    "build_learner",
    "build_parts",
    "load_checkpoint",
    "load",
    "load_generator",
    "CHECKPOINT",
]

# A resumed run must match the saved one in everything but these.
RESUMABLE_CHANGES = {
    "epochs",
    "progress",
    "threads",
    "max_steps",
    "eval_every",
    "eval_samples",
    "log_every",
    "data_dir",
    "out_dir",
    "on_divergence",  # a diverged run may be resumed with rollback on
    "rollback_lr_factor",
    "max_rollbacks",
    "tensorboard",
    "diverge_growth",
    "flush_denormal",
    "data_fingerprint",  # recorded from the data itself; provenance.check_same_data compares it
}
# the metrics.jsonl key of each optimizer's learning rate in a rollback record
LR_KEYS = {"optimizer": "lr", "gen_optimizer": "gen_lr", "cd_optimizer": "cd_lr"}

StepOut = tuple[Tensor, dict[str, float]]
StepFn = Callable[[Tensor, torch.Generator, "Tensor | None"], StepOut]


def build_kernel(cfg: Config, name: str | None = None, model: nn.Module | None = None) -> Kernel:
    """The kernel ``name`` (default: cfg.kernel); "feature" is an RBF on ``model``'s encoder code."""
    name = name or cfg.kernel
    if name == "feature":
        if model is None or not hasattr(model, "encode"):
            raise UserError("gen_kernel=feature needs an energy with an encoder (model=autoencoder or joint)")
        return FeatureKernel(
            _feature_codes(model, cfg.feature_codes),
            repulsion=cfg.feature_repulsion,
            bandwidth_rule=cfg.feature_bandwidth,
        )
    if name == "rbf":
        return RBF(cfg.bandwidth, cfg.median_over, cfg.log_term, cfg.median_of)  # type: ignore[arg-type]
    if name == "imq":
        return IMQ(bandwidth=cfg.bandwidth)
    return ConstantKernel()


def load_config_dataset(cfg: Config) -> Dataset:
    """The dataset a config names, read as its image settings say."""
    return load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, max_images=cfg.max_images or None)


def _feature_codes(model: nn.Module, mode: str) -> Callable[[Tensor], Tensor]:
    """E(x) for the feature kernel, its BatchNorm layers in ``mode``:

    - ``eval``: running statistics, so each particle's code is its own and the kernel's
      repulsive term is exact; early in training the running statistics do not yet match the
      generated images, and their codes can all but coincide.
    - ``batch``: the batch's own statistics (as the authors' code computes its features), the
      running statistics left as they are. The codes then depend on the whole batch, so the
      repulsive term is approximate.
    """
    encode: Callable[[Tensor], Tensor] = model.encode  # type: ignore[assignment]
    norms = [mod for mod in model.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]

    def codes(x: Tensor) -> Tensor:
        was = model.training
        momenta = [bn.momentum for bn in norms]
        model.train(mode == "batch")
        for bn in norms:
            bn.momentum = 0.0  # a momentum of 0 leaves the running statistics untouched
        try:
            return encode(x)
        finally:
            model.train(was)
            for bn, mom in zip(norms, momenta):
                bn.momentum = mom

    return codes


def build_learner(cfg: Config) -> Learner:
    """The learning rule of an energy-only method (cd, steincd, symmetric-steincd, the score matchings)."""
    if cfg.method == "cd":
        return CD(cfg.cd_k, cfg.langevin_step, cfg.langevin_noise)
    if cfg.method == "steincd":
        return SteinCD(cfg.epsilon, build_kernel(cfg), cfg.normalize)  # type: ignore[arg-type]
    if cfg.method == "symmetric-steincd":
        return SymmetricSteinCD(cfg.epsilon, build_kernel(cfg), cfg.normalize)  # type: ignore[arg-type]
    if cfg.method == "stein-score-matching":
        return SteinScoreMatching(build_kernel(cfg), cfg.normalize)  # type: ignore[arg-type]
    if cfg.method == "score-matching":
        return HyvarinenScoreMatching(cfg.sm_probes)
    raise UserError(f"method={cfg.method} trains a generator too; it has no single-model learner")


MNIST_SHAPE = (1, 28, 28)
N_CLASSES = 10  # the labels the joint energy and the conditional networks are built for


def _image_net_size(image_shape: tuple[int, ...], what: str) -> tuple[int, int]:
    """(side, channels) of square 32 or 64 px images, else a UserError."""
    if len(image_shape) == 3 and image_shape[1] == image_shape[2] and image_shape[1] in IMAGE_SIZES:
        return image_shape[1], image_shape[0]
    raise UserError(
        f"{what} is built for 28 x 28 MNIST or square 32 / 64 px images, not {tuple(image_shape)}: "
        "use another dataset or image size"
    )


def build_model(
    cfg: Config, dim: int, generator: torch.Generator | None = None, image_shape: tuple[int, ...] | None = None
) -> nn.Module:
    """The energy model (for the DCGAN baseline, the discriminator) for data of ``dim`` values
    shaped ``image_shape`` (MNIST's when not given)."""
    shape = tuple(image_shape) if image_shape is not None else MNIST_SHAPE
    if cfg.method == "dcgan":
        if shape == MNIST_SHAPE:
            if cfg.conditional:
                return MNISTConditionalDiscriminator(N_CLASSES, generator=generator)
            return MNISTDiscriminator(generator=generator)
        side, channels = _image_net_size(shape, "the DCGAN discriminator")
        if cfg.conditional:
            return ConditionalDCGANDiscriminator(side, channels, N_CLASSES, cfg.disc_width or 128, generator=generator)
        return DCGANDiscriminator(side, channels, cfg.disc_width or 128, generator=generator)
    if cfg.model == "rbm":
        return GaussianBernoulliRBM(dim, cfg.n_hidden, generator=generator)
    if cfg.model == "joint" and shape == MNIST_SHAPE:
        return JointAutoencoderEnergy.mnist(
            N_CLASSES, cfg.margin, cfg.code_dim, cfg.width or 64, generator, cfg.input_dropout, cfg.head_dropout
        )
    side, channels = _image_net_size(shape, f"the {cfg.model} energy")
    width = cfg.width or None
    if cfg.model == "joint":
        return JointAutoencoderEnergy.dcgan(
            side, channels, N_CLASSES, cfg.margin, cfg.code_dim, width, generator, cfg.input_dropout
        )
    return AutoencoderEnergy.dcgan(side, channels, cfg.code_dim, width, generator, cfg.input_dropout)


def build_generator(
    cfg: Config, generator: torch.Generator | None = None, image_shape: tuple[int, ...] | None = None
) -> nn.Module | None:
    """G(xi; eta) for the data's image shape; class-conditional for the joint energy."""
    if cfg.method not in GENERATOR_METHODS:
        return None
    shape = tuple(image_shape) if image_shape is not None else MNIST_SHAPE
    conditional = cfg.model == "joint" or cfg.conditional
    if shape == MNIST_SHAPE and not conditional:
        return MNISTGenerator(
            cfg.noise_dim, generator, cfg.gen_bias, cfg.gen_batchnorm, cfg.gen_bn_stats, cfg.gen_bn_eps
        )
    if shape == MNIST_SHAPE:
        return MNISTConditionalGenerator(
            cfg.noise_dim, N_CLASSES, generator, cfg.gen_bias, cfg.gen_batchnorm, cfg.gen_bn_stats, cfg.gen_bn_eps
        )
    side, channels = _image_net_size(shape, "the generator")
    ngf = cfg.gen_width or 128
    if conditional:
        return ConditionalDCGANGenerator(side, channels, N_CLASSES, cfg.noise_dim, ngf, generator=generator)
    return DCGANGenerator(side, channels, cfg.noise_dim, ngf, generator=generator)


def lr_decay(cfg: Config, epoch: int) -> float:
    """The learning-rate factor in ``epoch`` (counted from 0): 1, and from ``lr_decay_from`` on
    ``1 - (epoch - lr_decay_from) / (epochs - lr_decay_from)`` (the authors' MNIST code)."""
    start = cfg.lr_decay_from
    if start is None or epoch < start:
        return 1.0
    return 1.0 - (epoch - start) / (cfg.epochs - start)


@contextmanager
def _lr_scaled(opt: torch.optim.Optimizer, factor: float) -> Iterator[None]:
    """Every learning rate of ``opt`` times ``factor`` for one step, then back: a rule's or a
    schedule's factor leaves the rates a rollback lowered as they are."""
    if factor == 1.0:
        yield
        return
    saved = [group["lr"] for group in opt.param_groups]
    for group in opt.param_groups:
        group["lr"] = group["lr"] * factor
    try:
        yield
    finally:
        for group, lr in zip(opt.param_groups, saved):
            group["lr"] = lr


def _apply(loss: Tensor, opt: torch.optim.Optimizer, what: str, ranks: Ranks = SINGLE) -> None:
    """One optimizer step on one surrogate loss, its gradient averaged over ranks; a
    non-finite loss on any rank stops the run on every rank."""
    if not ranks.all_true(torch.isfinite(loss)):
        raise DivergenceError(f"non-finite {what} loss ({float(loss.detach())} on rank {ranks.rank})")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    ranks.average_gradients(p for group in opt.param_groups for p in group["params"])
    opt.step()


@dataclass
class _Parts:
    """What a run trains: named modules and optimizers, and one training step."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    step: StepFn
    frozen: set[str] = field(default_factory=set)


def _adam(cfg: Config, module: nn.Module, gen: bool = False) -> torch.optim.Adam:
    """Adam for the energy (or, ``gen``, the generator). ``adam_impl="fused"`` takes torch's
    single-kernel Adam, about 3x faster per step than the per-tensor ("foreach") one on the RBM
    (docs/performance.md); where this torch or device has none, the foreach one is used."""
    lr, beta1, wd = (cfg.gen_lr, cfg.gen_beta1, cfg.gen_weight_decay) if gen else (cfg.lr, cfg.beta1, cfg.weight_decay)
    params = list(module.parameters())
    if cfg.adam_impl == "fused":
        try:
            return torch.optim.Adam(params, lr=lr, betas=(beta1, cfg.beta2), weight_decay=wd, fused=True)
        except (RuntimeError, TypeError, ValueError):  # no fused Adam for this torch or device
            pass
    return torch.optim.Adam(params, lr=lr, betas=(beta1, cfg.beta2), weight_decay=wd)


def _autocast_forward(module: nn.Module, device_type: str) -> None:
    """Run ``module``'s forward in bfloat16 autocast and hand back float32, so only the network
    runs in low precision: the scores, kernels and SVGD sums built on its outputs stay float32."""
    inner = module.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = inner(*args, **kwargs)
        return out.float() if isinstance(out, Tensor) and out.is_floating_point() else out

    module.forward = forward  # type: ignore[method-assign]


def build_parts(
    cfg: Config,
    dim: int,
    device: torch.device,
    ranks: Ranks = SINGLE,
    image_shape: tuple[int, ...] | None = None,
) -> _Parts:
    """Modules, optimizers and the step function of a run; a step updates each part once
    (its gradients averaged over ``ranks`` when several processes train together). A step
    takes the real batch, the random stream and the batch's labels (used by the joint
    image-label energy only)."""
    init_gen = torch.Generator().manual_seed(cfg.seed)
    model = build_model(cfg, dim, init_gen, image_shape).to(device)
    G = build_generator(cfg, init_gen, image_shape)
    m = cfg.batch_size // ranks.world  # this rank's particles
    if cfg.amp:
        for net in (model, G):
            if net is not None:
                _autocast_forward(net, device.type)
    if G is None:
        learner = build_learner(cfg)
        opt = _adam(cfg, model)

        def energy_step(x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
            loss, stats = learner.loss(model, x_pos, rng)
            _apply(loss, opt, "energy", ranks)
            return loss, stats

        return _Parts({"model": model}, {"optimizer": opt}, energy_step)

    G = G.to(device)
    opt_g = _adam(cfg, G, gen=True)
    gen: Any = G  # an nn.Module with sample_noise (and, conditional, labels)
    conditional = isinstance(G, LabelSampler)

    def generate(rng: torch.Generator, y_pos: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """x- = G(xi) (Algorithm 2, step 2), with the labels a conditional G was given: drawn, or
        (gen_labels=batch) the real batch's."""
        if conditional:
            xi, y = gen.sample_noise(m, rng)
            if cfg.gen_labels == "batch":
                y = need_labels(y_pos)
            return gen(xi, y), y
        return gen(gen.sample_noise(m, rng)), None

    def labelled(y: Tensor | None) -> nn.Module:
        """The energy as a function of x alone: f(., y) for the joint energy."""
        if y is None:
            return model
        return model.given(y)  # type: ignore[operator]

    def need_labels(y_pos: Tensor | None) -> Tensor:
        if y_pos is None:
            raise UserError("the joint image-label energy needs a labelled dataset")
        return y_pos

    if cfg.method == "dcgan":
        opt_d = _adam(cfg, model)

        def dcgan_step(x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
            x_gen, y_gen = generate(rng, y_pos)
            if y_gen is None:
                d_real, d_fake = model(x_pos), model(x_gen.detach())
            else:  # the conditional baseline: D sees each image with its label
                d_real, d_fake = model(x_pos, need_labels(y_pos)), model(x_gen.detach(), y_gen)
            d_loss = DCGANLoss.discriminator_loss(d_real, d_fake)
            _apply(d_loss, opt_d, "discriminator", ranks)
            g_loss = DCGANLoss.generator_loss(model(x_gen) if y_gen is None else model(x_gen, y_gen))
            _apply(g_loss, opt_g, "generator", ranks)
            return d_loss, {"g_loss": float(g_loss.detach())}

        return _Parts({"model": model, "generator": G}, {"optimizer": opt_d, "gen_optimizer": opt_g}, dcgan_step)

    if cfg.method == "amortized-svgd":
        # a generator for a fixed energy: theta comes from another run and is not updated
        if not cfg.energy_from:
            raise UserError("method=amortized-svgd needs energy_from=RUN_DIR (a trained energy model to sample)")
        source = load(cfg.energy_from)
        try:
            model.load_state_dict(source.state_dict())
        except RuntimeError:
            raise UserError(
                f"energy_from={cfg.energy_from} holds a different model ({type(source).__name__}); "
                "the model settings and the data must match that run"
            ) from None
        model.requires_grad_(False)
        amortized = AmortizedSVGD(
            build_kernel(cfg, cfg.gen_kernel, model),
            cfg.normalize,  # type: ignore[arg-type]
            cfg.gen_loss,
        )

        def generator_step(x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
            x_gen, y_gen = generate(rng, y_pos)
            g_loss, stats = amortized.loss(labelled(y_gen), x_gen)
            _apply(g_loss, opt_g, "generator", ranks)
            return g_loss, stats

        return _Parts({"model": model, "generator": G}, {"gen_optimizer": opt_g}, generator_step, frozen={"model"})

    # SteinGAN = SteinCD-GAN(alpha = 0)
    opt = _adam(cfg, model)
    sg = SteinGAN(
        build_kernel(cfg, cfg.gen_kernel, model),
        cfg.gamma,
        cfg.gamma_adaptive,
        cfg.alpha,
        cfg.epsilon,
        build_kernel(cfg),
        cfg.normalize,  # type: ignore[arg-type]
        cfg.gamma_raise_when,  # type: ignore[arg-type]
        cfg.gen_loss,
    )

    optimizers: dict[str, torch.optim.Optimizer] = {"optimizer": opt, "gen_optimizer": opt_g}
    # A SteinCD gradient is about eps times a SteinGAN one (hundreds of times smaller on the MNIST
    # RBM), so through one shared Adam state the SteinCD steps of a mix barely move theta.
    opt_cd = _adam(cfg, model) if cfg.steincd_optimizer == "own" and 0.0 < cfg.alpha < 1.0 else opt
    if opt_cd is not opt:
        optimizers["cd_optimizer"] = opt_cd

    if cfg.schedule == "alternate":
        schedule = AlternatingSchedule(cfg.gamma, cfg.gamma_adaptive or cfg.gamma, cfg.energy_lr_boost, cfg.skip_margin)
        cost: Callable[[Tensor], Tensor] = model.reconstruction_error  # type: ignore[assignment]

        def alternating_step(x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
            x_gen, y_gen = generate(rng, y_pos)  # one batch of samples, for whichever step this is
            if schedule.generator_turn():
                loss, stats = sg.generator_loss(labelled(y_gen), x_gen)
                _apply(loss, opt_g, "generator", ranks)
                stats["g_loss"] = float(loss.detach())
            else:
                energy_pos = labelled(None if y_gen is None else need_labels(y_pos))
                loss, stats = sg.energy_loss(energy_pos, x_pos, x_gen, False, labelled(y_gen), schedule.gamma_now())
                with _lr_scaled(opt, schedule.energy_lr_factor()):
                    _apply(loss, opt, "energy", ranks)
            with torch.no_grad():  # the next step's rules, from this step's batches (input dropout on)
                costs = torch.stack([cost(x_pos).mean(), cost(x_gen.detach()).mean()])
            c_real, c_gen = ranks.mean_tensor(costs).tolist()
            schedule.after(c_real, c_gen)
            return loss, {**stats, "cost_real": c_real, "cost_gen": c_gen}

        return _Parts({"model": model, "generator": G, "schedule": schedule}, optimizers, alternating_step)

    def steingan_step(x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
        x_gen, y_gen = generate(rng, y_pos)  # Algorithm 2, step 2
        g_loss, gstats = sg.generator_loss(labelled(y_gen), x_gen)  # step 3
        _apply(g_loss, opt_g, "generator", ranks)
        steincd = ranks.agree(sg.use_steincd(rng))  # every rank takes rank 0's coin
        # step 4; the joint energy sees each image with its own label
        energy_pos = labelled(None if y_gen is None else need_labels(y_pos))
        e_loss, stats = sg.energy_loss(energy_pos, x_pos, x_gen, steincd, labelled(y_gen))
        _apply(e_loss, opt_cd if steincd else opt, "energy", ranks)
        return e_loss, {**stats, **gstats, "g_loss": float(g_loss.detach())}

    return _Parts({"model": model, "generator": G}, optimizers, steingan_step)


def load(run_dir: str | Path) -> nn.Module:
    """The trained energy model of a run folder (the discriminator of a DCGAN run), in eval
    mode on the CPU."""
    ck = load_checkpoint(run_dir)
    cfg = from_dict(ck["config"]).validate()
    shape = tuple(ck.get("image_shape") or MNIST_SHAPE)
    return _restore(build_model(cfg, int(ck["dim"]), image_shape=shape), ck, "model", run_dir)


def load_generator(run_dir: str | Path) -> nn.Module:
    """The trained generator of a run folder, in eval mode on the CPU."""
    ck = load_checkpoint(run_dir)
    cfg = from_dict(ck["config"]).validate()
    G = build_generator(cfg, image_shape=tuple(ck.get("image_shape") or MNIST_SHAPE))
    if G is None or "generator" not in ck:
        raise UserError(f"{run_dir} holds no generator (method={cfg.method}); sample its energy model instead")
    return _restore(G, ck, "generator", run_dir)


def _restore(module: nn.Module, ck: dict[str, Any], key: str, run_dir: str | Path) -> nn.Module:
    try:
        module.load_state_dict(ck[key])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"checkpoint in {run_dir} does not match its config ({str(e).splitlines()[0]})") from None
    return module.eval()


def _summary_writer_class() -> Any:
    """torch's SummaryWriter, or a UserError before training when its packages are missing
    (torch.utils.tensorboard imports without them and fails only later)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise UserError(
            f"tensorboard=true needs the tensorboard package ({e}): pip install 'steinebm[tensorboard]', "
            "or set tensorboard=false"
        ) from None
    return SummaryWriter


class _Log:
    """Appends JSON lines and, given a ``tensorboard`` folder, writes each numeric value (but the
    step) as a TensorBoard scalar at the record's step. On resume and on rollback the records
    after the checkpoint's step are dropped, in both, since they are about to be redone."""

    def __init__(
        self, path: Path, keep_until_step: int | None, enabled: bool = True, tensorboard: Path | None = None
    ) -> None:
        self.path = path
        self.fh: Any = None
        self.tb: Any = None
        self.tensorboard = tensorboard
        self.enabled = enabled
        if not enabled:  # a rank other than 0 writes nothing
            return
        if keep_until_step is None:
            path.unlink(missing_ok=True)
            self._open(0)
        else:
            self.truncate(keep_until_step)

    def _open(self, purge_from: int) -> None:
        self.fh = open(self.path, "a")
        if self.tensorboard is not None:
            # TensorBoard hides the events of earlier writers at steps >= purge_step
            self.tb = _summary_writer_class()(str(self.tensorboard), purge_step=purge_from, flush_secs=30)

    def truncate(self, step: int) -> None:
        """Keep the records up to ``step``: the metrics file is rewritten atomically, so a kill
        during the rewrite loses nothing."""
        if not self.enabled:
            return
        self.close()
        if self.path.exists():
            kept = "".join(ln + "\n" for ln, rec in _json_lines(self.path) if rec["step"] <= step)
            atomic_write(self.path, lambda fh: fh.write(kept.encode()))
        self._open(step + 1)

    def write(self, record: dict[str, Any]) -> None:
        if self.fh is None:
            return
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, global_step=record["step"])

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


# what a steinebm start leaves in its run folder before the first checkpoint (a failed start
# removes these again; a kill can leave them): such a folder may be started afresh
_START_FILES = {"config.yaml", "metrics.jsonl", "tensorboard", "samples"}
# the first line of every config.yaml steinebm writes: tells its own file from a user's
CONFIG_HEADER = "# steinebm run config: `steinebm resume RUN_DIR` continues this run\n"


def _foreign_entries(out: Path) -> list[str]:
    """Entries of ``out`` that no steinebm start wrote: a user's files, which a new run must not
    overwrite or mix with."""
    foreign = []
    for entry in sorted(out.iterdir()):
        name = entry.name
        if name.endswith(".tmp") and (name.startswith(PROBE_PREFIX) or name.startswith(tuple(_START_FILES))):
            continue
        if name == "config.yaml":
            try:
                with open(entry, encoding="utf-8") as fh:
                    if fh.readline() == CONFIG_HEADER:
                        continue
            except (OSError, UnicodeDecodeError):
                pass
        elif name in _START_FILES:
            continue
        foreign.append(name)
    return foreign


def check_run_folder(out: Path, resume: bool) -> None:
    """A fresh run needs an absent or empty ``out`` (or one that a failed steinebm start left);
    a resume needs a checkpoint there. Nothing is created or touched."""
    has_run = (out / CHECKPOINT).exists() or (out / PREVIOUS).exists()
    if resume:
        if not has_run:
            raise UserError(
                f"nothing to resume in {out} (no {CHECKPOINT}): check the folder, or train without --resume"
            )
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"out_dir {out} is a file, not a folder: choose another out_dir")
    if has_run:
        raise UserError(
            f"{out} already holds a run: continue it with `steinebm resume {out}`, or choose another out_dir"
        )
    if out.is_dir():
        foreign = _foreign_entries(out)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise UserError(
                f"out_dir {out} is not empty and is not a steinebm run (it holds {shown}): choose a new or empty folder"
            )


def _check_writable(out: Path) -> list[Path]:
    """Create ``out`` and write, fsync and remove a probe file in it (under a name of its own,
    so no file already there is touched). Returns the folders it created, outermost first."""
    created = [p for p in (out, *out.parents) if not p.exists()][::-1]
    try:
        out.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(created[0].parent)
        fd, probe = tempfile.mkstemp(dir=out, prefix=PROBE_PREFIX, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"\0" * 65536)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.unlink(probe)
    except OSError as e:
        for folder in reversed(created):  # only what this call made, and only if empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise UserError(f"run folder {out} is not writable ({e.strerror or e}): choose another out_dir") from None
    return created


def _remove_start(start: _Start) -> None:
    """Undo a start that failed before its first checkpoint: the files it wrote, then the
    folders it created, where they are empty."""
    for path in start.wrote:
        try:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass
    for folder in reversed(start.created):
        try:
            folder.rmdir()
        except OSError:
            break


def _checkpoint_bytes(parts: _Parts) -> int:
    """A generous estimate of one checkpoint's size: every module's state, Adam's two moments
    per trained parameter, 1 KiB of archive headers per tensor and 64 KiB for the RNG state,
    the config and the rest."""
    tensors = [t for mod in parts.modules.values() for t in mod.state_dict().values()]
    size = sum(t.numel() * t.element_size() for t in tensors)
    n = len(tensors)
    for opt in parts.optimizers.values():
        params = [p for group in opt.param_groups for p in group["params"]]
        size += 2 * sum(p.numel() * p.element_size() for p in params)
        n += 3 * len(params)  # step, exp_avg, exp_avg_sq
    return size + 1024 * n + 64 * 1024


def _check_free_space(out: Path, checkpoint_bytes: int) -> None:
    """Room for three checkpoints: the previous and the latest stay while the next is written
    and verified."""
    need = 3 * checkpoint_bytes
    try:
        free = shutil.disk_usage(out).free
    except OSError as e:
        raise UserError(f"cannot read the free space of {out} ({e.strerror or e}): choose another out_dir") from None
    if free < need:
        raise UserError(
            f"not enough free space for the run folder {out}: {free / 2**20:.1f} MiB free, {need / 2**20:.1f} MiB "
            "needed (three checkpoints exist while one is replaced): free some space or choose another out_dir"
        )


def _on_main(ranks: Ranks, check: Callable[[], None]) -> None:
    """Run ``check`` on rank 0 and raise its UserError on every rank, so that no rank waits
    forever in a collective for one that has stopped. Also a barrier."""
    err: str | None = None
    if ranks.is_main:
        try:
            check()
        except UserError as e:
            err = str(e)
    first = ranks.gather_objects(err)[0]
    if first is not None:
        raise UserError(str(first))


def config_diff(saved: dict[str, Any], cfg: Config) -> list[str]:
    """Keys (other than RESUMABLE_CHANGES) in which a saved config differs from ``cfg``; keys a
    saved config predates count as their defaults."""
    try:
        old = from_dict(saved).to_dict()
    except UserError:
        return ["(unreadable saved config)"]
    return [k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and old.get(k) != v]


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"device={name!r} is not a device torch knows: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA device is available: use device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device=mps was asked for but MPS is not available: use device=cpu")
    return device


def _norms(modules: dict[str, nn.Module]) -> dict[str, Tensor]:
    """The L2 norm of each module's parameters (0-d tensors on their device: no host read)."""
    out = {}
    for name, mod in modules.items():
        params = [p.detach() for p in mod.parameters()]
        if params:
            out[name] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p) for p in params]))
    return out


def _check_growth(modules: dict[str, nn.Module], init: dict[str, Tensor], growth: float) -> None:
    """A run whose parameters stay finite can still have exploded (lr far too high: a test
    log-likelihood of -1e16). It is taken as diverged when some part's parameter norm exceeds
    ``growth`` times its norm at initialisation (at least 1): the shipped configs' runs stay
    within a few times theirs, an exploded run passes it by many orders of magnitude."""
    if not growth:
        return
    now = _norms(modules)
    names = list(init)
    if not names:
        return
    ratios = torch.stack([now[k] / init[k].clamp(min=1.0) for k in names]).tolist()  # one host read
    r, worst = max(zip(ratios, names))
    if r > growth:
        raise DivergenceError(
            f"the {worst}'s parameter norm grew to {r:.3g} times its initial one (diverge_growth={growth:g})"
        )


def _all_finite(modules: dict[str, nn.Module]) -> bool:
    # one device-to-host read per step, not one per parameter (each is a sync on a GPU)
    flags = [torch.isfinite(p).all() for mod in modules.values() for p in mod.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def train(cfg: Config, resume: bool = False, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train one run; returns the last evaluation record. See the module docstring. Started by
    torchrun, the processes train the run together (:mod:`steinebm.distributed`). A fresh run
    that fails before its first checkpoint leaves nothing behind (no folder, no files)."""
    cfg.validate()
    owns_group = not torch.distributed.is_available() or not torch.distributed.is_initialized()
    ranks, device_name = from_env(cfg.device)
    start = _Start()
    # Weights that decay towards zero (those of always-black pixels) become subnormal floats, on
    # which CPU arithmetic is many times slower (a 6x slower SteinCD step was seen); flushing them
    # to zero changes nothing a float32 model can resolve.
    torch.set_flush_denormal(cfg.flush_denormal)
    try:
        return _train(cfg, resume, dataset, ranks, device_name, start)
    except BaseException:
        if not resume and not start.saved and ranks.is_main:
            _remove_start(start)
        raise
    finally:
        torch.set_flush_denormal(False)  # the process's default again
        if owns_group:
            ranks.close()


@dataclass
class _Start:
    """What a fresh start has done so far: the folders and files it created, and whether a
    checkpoint exists."""

    created: list[Path] = field(default_factory=list)
    wrote: list[Path] = field(default_factory=list)
    saved: bool = False


def _train(
    cfg: Config, resume: bool, dataset: Dataset | None, ranks: Ranks, device_name: str, start: _Start
) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    ck_path = out / CHECKPOINT
    if ranks.active and cfg.batch_size % ranks.world:
        raise UserError(f"batch_size={cfg.batch_size} does not split over {ranks.world} processes: make it a multiple")

    def check_folder() -> None:
        check_run_folder(out, resume)
        start.created = _check_writable(out)
        if cfg.tensorboard:
            _summary_writer_class()

    # every rank has seen the folder as it was before rank 0 writes to it
    _on_main(ranks, check_folder)
    if ranks.is_main:  # before the free-space check: they may be what fills the disk
        remove_stale_temps(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(device_name)

    data = dataset if dataset is not None else load_config_dataset(cfg)
    cfg = record_data(cfg, data)  # the data's name and fingerprint, kept in config.yaml and the checkpoint
    x_train = data.train.x[: cfg.n_train] if cfg.n_train else data.train.x
    y_train = data.train.y[: x_train.shape[0]].to(device)
    x_train = x_train.to(device)
    x_test, x_val = data.test.x.to(device), data.val.x.to(device)
    n, dim = x_train.shape
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"batch_size={cfg.batch_size} is larger than the {n} training images")

    if (cfg.model == "joint" or cfg.conditional) and data.train.y.numel() and int(data.train.y.max()) >= N_CLASSES:
        raise UserError(
            f"the joint and class-conditional networks have {N_CLASSES} classes, but {data.name}'s labels go up to "
            f"{int(data.train.y.max())}: use an unconditional model, or data with labels 0-{N_CLASSES - 1}"
        )
    parts = build_parts(cfg, dim, device, ranks, tuple(data.image_shape))
    _on_main(ranks, lambda: _check_free_space(out, _checkpoint_bytes(parts)))
    G = parts.modules.get("generator")
    if cfg.eval_samples and not isinstance(G, (MNISTGenerator, MNISTConditionalGenerator)):
        raise UserError("eval_samples scores an MNIST generator's images: set eval_samples=0 here")
    if isinstance(G, LabelSampler) and not resume:
        # a conditional generator draws labels as often as the training set holds them
        G.set_class_counts(torch.bincount(data.train.y, minlength=G.n_classes).float())
    model = parts.modules["model"]

    def rank_seed(at_step: int) -> int:
        # rank 0 of a fresh run draws exactly what a one-process run draws
        return cfg.seed + 1 + 1_000_003 * ranks.rank + 7_919 * at_step

    rng = torch.Generator(device=device).manual_seed(rank_seed(0))  # the learners' random draws

    # the training loss summed since the last log line: saved too, so that a resumed run's next
    # line averages the same steps as an uninterrupted run's
    loss_sum, loss_n = 0.0, 0

    def restore(ck: dict[str, Any]) -> int:
        """Load modules, optimizers (learning rates included), this rank's random stream and loss
        window from a checkpoint; returns its step."""
        nonlocal loss_sum, loss_n
        for name, mod in parts.modules.items():
            mod.load_state_dict(ck[name])
        for name, opt in parts.optimizers.items():
            opt.load_state_dict(ck[name])
        at = int(ck["step"])
        saved = ck.get("rng_ranks") or [ck["rng"]]
        if ranks.rank < len(saved):
            rng.set_state(saved[ranks.rank])
        else:  # more processes than when it was saved: a fresh stream for this rank
            rng.manual_seed(rank_seed(at))
        windows = ck.get("loss_windows") or []
        loss_sum, loss_n = (
            (float(windows[ranks.rank][0]), int(windows[ranks.rank][1])) if ranks.rank < len(windows) else (0.0, 0)
        )
        return at

    # the divergence guard's yardstick: each part's parameter norm as built from the seed (the
    # same before every resume, so a resumed run judges growth as an uninterrupted one does)
    init_norms = _norms(parts.modules)
    step = 0
    rollbacks = 0  # of the whole run, resumes included: max_rollbacks bounds them all
    elapsed = 0.0  # seconds of training before this process, for the run's total time
    if resume:
        latest: list[dict[str, Any]] = []

        def fall_back() -> None:
            ck, note = load_latest(out)
            if note:
                print(f"steinebm: {note}", file=sys.stderr)
            latest.append(ck)

        _on_main(ranks, fall_back)  # rank 0 repairs the folder before the others read it
        ck = latest[0] if latest else load_checkpoint(ck_path)
        check_same_data(ck["config"], str(cfg.data_fingerprint), f"cannot resume {out}")
        diff = config_diff(ck["config"], cfg)
        if diff:
            raise UserError(f"cannot resume {out}: the config differs in {', '.join(diff)}; use the saved config.yaml")
        step = restore(ck)
        rollbacks = int(ck.get("rollbacks", 0))
        elapsed = float(ck.get("elapsed", 0.0))
        del ck, latest
    if ranks.is_main and not resume:
        start.wrote += [out / "metrics.jsonl", out / "config.yaml"]
        start.wrote += [out / name for name in ("tensorboard", "samples") if not (out / name).exists()]
    log = _Log(
        out / "metrics.jsonl",
        keep_until_step=step if resume else None,
        enabled=ranks.is_main,
        tensorboard=out / "tensorboard" if cfg.tensorboard else None,
    )
    if ranks.is_main:
        config_text = (CONFIG_HEADER + yaml.safe_dump(cfg.to_dict(), sort_keys=False)).encode()
        atomic_write(out / "config.yaml", lambda fh: fh.write(config_text))

    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    saved_at = step if resume else -1  # the step of the newest checkpoint

    def save() -> None:
        # a collective: every rank calls save()
        nonlocal saved_at
        saved_at = step  # on every rank, so that all of them skip or take the same saves
        gathered: list[Any] = ranks.gather_objects((rng.get_state(), loss_sum, loss_n))
        if not ranks.is_main:
            return
        log.flush()  # the TensorBoard events are at least as far along as the checkpoint
        save_checkpoint(
            {
                "version": VERSION,
                **{name: mod.state_dict() for name, mod in parts.modules.items()},
                **{name: opt.state_dict() for name, opt in parts.optimizers.items()},
                "step": step,
                "rng": rng.get_state(),
                "rng_ranks": [g[0] for g in gathered],
                "loss_windows": [[g[1], g[2]] for g in gathered],
                "rollbacks": rollbacks,
                "config": cfg.to_dict(),
                "dim": dim,
                "image_shape": list(data.image_shape),
                "elapsed": time.time() - t0,
            },
            ck_path,
        )
        start.saved = True

    def evaluate(epoch: float) -> dict[str, Any]:
        rec: dict[str, Any] = {"step": step, "epoch": epoch}
        if not ranks.is_main:
            return rec
        if isinstance(model, GaussianBernoulliRBM) and model.n_hidden > EXACT_MAX_HIDDEN:
            # too many hidden units to enumerate: one AIS log Z (seeded by the step) for both splits
            # the chains are drawn on the model's device, so the generator must live there too
            ais_rng = torch.Generator(device=device).manual_seed(step)
            est = ais_log_partition(model, n_chains=100, n_betas=2_000, generator=ais_rng)
            rec["test_ll"] = mean_negative_energy(model, x_test) - est.log_z
            rec["val_ll"] = mean_negative_energy(model, x_val) - est.log_z
            rec["ll_stderr"], rec["ll_method"] = est.stderr, "ais"
        elif hasattr(model, "log_partition"):
            rec["test_ll"] = average_log_likelihood(model, x_test)
            rec["val_ll"] = average_log_likelihood(model, x_val)
        if cfg.eval_samples and G is not None:
            rec.update(_score_generator(G, cfg.eval_samples, out / "samples" / f"step-{step:07d}.png"))
        rec["time"] = time.time() - t0
        log.write(rec)
        if not cfg.progress:  # no bar: one line per evaluation shows the run is alive
            ll = f", test_ll {rec['test_ll']:.2f}" if "test_ll" in rec else ""
            print(
                f"{cfg.method} seed {cfg.seed}: epoch {epoch:.4g}/{cfg.epochs}, step {step}/{total_steps}{ll}, "
                f"{rec['time']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        return rec

    def logged_eval(at: int) -> dict[str, Any]:
        """The evaluation already logged at step ``at``, if any (after a resume or rollback)."""
        done = [r for r in read_metrics(out) if "epoch" in r and r["step"] == at]
        return done[-1] if done else {}

    def lrs() -> dict[str, float]:
        return {LR_KEYS.get(name, f"{name}_lr"): opt.param_groups[0]["lr"] for name, opt in parts.optimizers.items()}

    def roll_back(reason: str) -> int:
        """Back to the last checkpoint with every learning rate times rollback_lr_factor (the
        rates in force now, so a second rollback to the same checkpoint lowers them again)."""
        ranks.barrier()  # rank 0 has finished writing the checkpoint every rank reads
        now = {name: [g["lr"] for g in opt.param_groups] for name, opt in parts.optimizers.items()}
        at = restore(load_checkpoint(ck_path))
        for name, opt in parts.optimizers.items():
            for group, lr in zip(opt.param_groups, now[name]):
                group["lr"] = lr * cfg.rollback_lr_factor
        log.truncate(at)
        log.write({"step": at, "rollback": rollbacks, "diverged_at": failed_step, **lrs(), "reason": reason})
        return at

    t0 = time.time() - elapsed  # the run's clock, across resumes
    last_eval: dict[str, Any] = {}
    if resume:  # the evaluation already logged at the checkpoint's step, if any
        last_eval = logged_eval(step)
    if step == 0 and not resume:
        last_eval = evaluate(0.0)
        save()
    bar = _progress(total_steps, step, cfg.progress and ranks.is_main, desc=f"{cfg.method} seed {cfg.seed}")
    perm_epoch, perm = -1, torch.empty(0, dtype=torch.long)
    failed_step = step + 1
    try:
        while step < total_steps:
            epoch, b = divmod(step, steps_per_epoch)
            if epoch != perm_epoch:
                # The order of an epoch depends only on (seed, epoch): a resumed run sees the same batches.
                g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
                perm, perm_epoch = torch.randperm(n, generator=g).to(device), epoch
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x_pos, y_pos = ranks.local_slice(x_train[idx]), ranks.local_slice(y_train[idx])
            failed_step = step + 1
            if cfg.input_dropout > 0 or cfg.head_dropout > 0:
                # torch's own generator feeds the energy's dropout: seeded per step and rank, so a
                # resumed run draws the same masks
                torch.manual_seed(rank_seed(step) + 1)
            try:
                with ExitStack() as scaled:
                    decay = lr_decay(cfg, epoch)
                    for opt in parts.optimizers.values():
                        scaled.enter_context(_lr_scaled(opt, decay))
                    loss, stats = parts.step(x_pos, rng, y_pos)
                if not _all_finite(parts.modules):
                    raise DivergenceError("non-finite parameters after the update")
                after = step + 1
                if (
                    after % cfg.log_every == 0
                    or after % steps_per_epoch == 0
                    or (cfg.checkpoint_every and after % cfg.checkpoint_every == 0)
                    or after == total_steps
                ):  # before anything is logged or saved: a finite blow-up is caught too
                    _check_growth(parts.modules, init_norms, cfg.diverge_growth)
            except DivergenceError as e:
                if cfg.on_divergence != "rollback" or rollbacks >= cfg.max_rollbacks:
                    raise
                rollbacks += 1
                step = roll_back(str(e))
                save()  # the lowered rates hold from now on, even if the run is killed before the next checkpoint
                last_eval = logged_eval(step)
                bar.n = step
                bar.refresh()
                continue
            step += 1
            loss_sum += float(loss.detach())
            loss_n += 1
            bar.update(1)
            if step % cfg.log_every == 0:
                log.write({"step": step, "loss": ranks.mean(loss_sum / loss_n), **stats})
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4g}")
                loss_sum, loss_n = 0.0, 0
            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch and cfg.eval_every and (step // steps_per_epoch) % cfg.eval_every == 0:
                last_eval = evaluate(step / steps_per_epoch)
                if "test_ll" in last_eval:
                    bar.set_postfix(test_ll=f"{last_eval['test_ll']:.2f}")
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or (
                not cfg.checkpoint_every and end_of_epoch
            ):
                save()
        if not last_eval or last_eval["step"] != step:
            last_eval = evaluate(step / steps_per_epoch)
        if saved_at != step:  # a second save of the same step would push out the previous checkpoint
            save()
    except DivergenceError as e:
        last = load_checkpoint(ck_path)["step"] if ck_path.exists() else None
        if cfg.on_divergence == "rollback":
            lr_now = ", ".join(f"{k}={v:.3g}" for k, v in lrs().items())
            tried = f" after {rollbacks} rollback{'s' * (rollbacks != 1)} ({lr_now})"
            hint = "start a new out_dir with a lower lr or sampler step size, or resume with a larger max_rollbacks"
        else:
            tried = ""
            hint = (
                f"resume it with `steinebm resume {out} on_divergence=rollback`, or start a new out_dir with a "
                "lower lr or sampler step size"
            )
        raise DivergenceError(
            f"training diverged at step {failed_step}{tried}: {e}; the last good checkpoint is {ck_path} "
            f"(step {last}); {hint}"
        ) from None
    finally:
        bar.close()
        log.close()
    return last_eval


def _score_generator(G: nn.Module, n: int, grid_png: Path) -> dict[str, float]:
    """``n`` images from seeded noise scored under both MNIST classifiers, and the first 100 as
    a 10 x 10 grid (scored as one split, and saved to ``grid_png``). The generator's mode is
    left as it was."""
    from .plots import save_image_grid
    from .sample_scores import generated_images, grid_scores, score_images

    was = G.training
    G.eval()
    try:
        x = generated_images(G, n, seed=0, batch_size=min(n, 1000))
    finally:
        G.train(was)
    scores = score_images(x)
    if n >= 100:
        scores.update(grid_scores(x))
        grid_png.parent.mkdir(exist_ok=True)
        save_image_grid(x[:100], grid_png, MNIST_SHAPE, nrow=10)
    return scores


def _progress(total: int, initial: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    # on a terminal the bar redraws in place; in a log file, one line every 30 s is enough
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        desc=desc,
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=interval,
    )


def _json_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The complete JSON lines of a log (a kill mid-write can leave a partial last line)."""
    out = []
    for ln in path.read_text().splitlines():
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append((ln, rec))
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    return [rec for _, rec in _json_lines(p)] if p.exists() else []
