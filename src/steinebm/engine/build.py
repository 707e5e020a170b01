"""Building a run from its config: the kernel, the learner, the energy model, the generator, the
optimizers and the learning rule that trains them; loading a trained model back from a run folder
(without the training loop)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from steinebm.core.distributed import SINGLE, Ranks
from steinebm.core.kernels import IMQ, RBF, ConstantKernel, FeatureKernel, Kernel
from steinebm.data import Dataset, load_dataset
from steinebm.engine.checkpoint import (
    load_checkpoint,
)
from steinebm.engine.config import Config
from steinebm.engine.config_file import from_dict
from steinebm.errors import UserError, first_line
from steinebm.learners import Learner
from steinebm.learners.registry import RuleContext, rule_entry, trains_generator
from steinebm.learners.rules import Rule
from steinebm.models.common import LabelSampler
from steinebm.models.dcgan_nets import (
    IMAGE_SIZES,
    ConditionalDCGANDiscriminator,
    ConditionalDCGANGenerator,
    DCGANDiscriminator,
    DCGANGenerator,
)
from steinebm.models.energies import GaussianBernoulliRBM
from steinebm.models.energies.autoencoder import AutoencoderEnergy
from steinebm.models.energies.joint import JointAutoencoderEnergy
from steinebm.models.mnist_nets import (
    MNISTConditionalDiscriminator,
    MNISTConditionalGenerator,
    MNISTDiscriminator,
    MNISTGenerator,
)
from steinebm.shapes import MNIST_SHAPE

__all__ = [
    "N_CLASSES",
    "build_kernel",
    "load_config_dataset",
    "build_learner",
    "build_model",
    "build_generator",
    "build_parts",
    "load",
    "load_generator",
]


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
    - ``batch``: the batch's own statistics and the energy's input dropout (as the authors'
      code computes its features: its encoder pass drops out the input too), the running
      statistics left as they are. The codes then depend on the whole batch, so the repulsive
      term is approximate.
    """
    encode: Callable[..., Tensor] = model.encode  # type: ignore[assignment]
    norms = [mod for mod in model.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]

    def codes(x: Tensor) -> Tensor:
        was = model.training
        momenta = [bn.momentum for bn in norms]
        model.train(mode == "batch")
        for bn in norms:
            bn.momentum = 0.0  # a momentum of 0 leaves the running statistics untouched
        try:
            return encode(x, mode == "batch")
        finally:
            model.train(was)
            for bn, mom in zip(norms, momenta):
                bn.momentum = mom

    return codes


def build_learner(ctx: RuleContext) -> Learner:
    """The learner of an energy-only method (its registry entry's ``learner``) for the run
    ``ctx`` describes; the rule (an :class:`~steinebm.learners.rules.EnergyRule`) trains the
    energy with it."""
    learner = rule_entry(ctx.cfg.method).learner
    if learner is None:
        raise UserError(f"method={ctx.cfg.method} trains a generator too; it has no single-model learner")
    return learner(ctx)


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
    if rule_entry(cfg.method).discriminator:
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
            side, channels, N_CLASSES, cfg.margin, cfg.code_dim, width, generator, cfg.input_dropout, cfg.head_dropout
        )
    return AutoencoderEnergy.dcgan(side, channels, cfg.code_dim, width, generator, cfg.input_dropout)


def build_generator(
    cfg: Config, generator: torch.Generator | None = None, image_shape: tuple[int, ...] | None = None
) -> nn.Module | None:
    """G(xi; eta) for the data's image shape; class-conditional for the joint energy."""
    if not trains_generator(cfg.method):
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
    labels: Tensor | None = None,
    data_name: str = "the data",
) -> Rule:
    """The run's learning rule (:mod:`steinebm.learners.rules`), built with its modules and
    optimizers: the energy model, and a generator where the method trains one. A step updates
    each part once (its gradients averaged over ``ranks`` when several processes train
    together); it takes the real batch, the random stream and the batch's labels. ``labels``:
    the training set's (a class-conditional generator draws labels as often as they occur there;
    a checkpoint restored later overwrites them), named ``data_name`` in errors."""
    conditional = cfg.model == "joint" or cfg.conditional
    if conditional and labels is not None and labels.numel() and int(labels.max()) >= N_CLASSES:
        raise UserError(
            f"the joint and class-conditional networks have {N_CLASSES} classes, but {data_name}'s labels go up to "
            f"{int(labels.max())}: use an unconditional model, or data with labels 0-{N_CLASSES - 1}"
        )
    init_gen = torch.Generator().manual_seed(cfg.seed)
    model = build_model(cfg, dim, init_gen, image_shape).to(device)
    G = build_generator(cfg, init_gen, image_shape)
    if cfg.eval_samples and not isinstance(G, (MNISTGenerator, MNISTConditionalGenerator)):
        raise UserError("eval_samples scores an MNIST generator's images: set eval_samples=0 here")
    if isinstance(G, LabelSampler) and labels is not None:
        G.set_class_counts(torch.bincount(labels, minlength=G.n_classes).float())
    if G is not None:
        G = G.to(device)
    if cfg.amp:
        for net in (model, G):
            if net is not None:
                _autocast_forward(net, device.type)
    ctx = RuleContext(
        cfg=cfg,
        model=model,
        generator=G,
        ranks=ranks,
        m=cfg.batch_size // ranks.world,  # this rank's particles
        kernel=lambda name: build_kernel(cfg, name, model),
        adam=lambda module, gen=False: _adam(cfg, module, gen),
        energy_learner=lambda: build_learner(ctx),  # looked up at call time
        load_energy=lambda run: load(run),
    )
    return rule_entry(cfg.method).build(ctx)


def load(run_dir: str | Path, checkpoint: dict[str, Any] | None = None) -> nn.Module:
    """The trained energy model of a run folder (the discriminator of a DCGAN run), in eval
    mode on the CPU. ``checkpoint``: the run's checkpoint already read (by
    :func:`~steinebm.engine.checkpoint.load_checkpoint`), so that a command reads it once."""
    ck = checkpoint if checkpoint is not None else load_checkpoint(run_dir)
    cfg = from_dict(ck["config"]).validate()
    shape = tuple(ck.get("image_shape") or MNIST_SHAPE)
    return _restore(build_model(cfg, int(ck["dim"]), image_shape=shape), ck, "model", run_dir)


def load_generator(run_dir: str | Path, checkpoint: dict[str, Any] | None = None) -> nn.Module:
    """The trained generator of a run folder, in eval mode on the CPU (``checkpoint`` as for
    :func:`load`)."""
    ck = checkpoint if checkpoint is not None else load_checkpoint(run_dir)
    cfg = from_dict(ck["config"]).validate()
    G = build_generator(cfg, image_shape=tuple(ck.get("image_shape") or MNIST_SHAPE))
    if G is None or "generator" not in ck:
        raise UserError(f"{run_dir} holds no generator (method={cfg.method}); sample its energy model instead")
    return _restore(G, ck, "generator", run_dir)


def _restore(module: nn.Module, ck: dict[str, Any], key: str, run_dir: str | Path) -> nn.Module:
    try:
        module.load_state_dict(ck[key])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"checkpoint in {run_dir} does not match its config ({first_line(e)})") from None
    return module.eval()
