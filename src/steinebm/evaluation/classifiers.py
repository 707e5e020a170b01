"""Inception score and mode coverage of generated images, with small classifiers shipped trained.

Liu & Wang (2017, Section 5.1) score MNIST generators by the inception score computed with a
classifier trained on the MNIST training set, over 50,000 generated images. The classifier here,
:class:`MNISTClassifier`, ships trained in ``steinebm/assets/mnist-classifier.pt`` (written by
``scripts/train_mnist_classifier.py``; provenance in ``assets/mnist-classifier.md``) and is
sha256-checked on every load.

For CIFAR-10 (Section 5.2) the paper uses the ImageNet Inception network, whose weights cannot be
fetched here. :class:`CIFAR10Classifier` (a ResNet-20 of He et al., 2016) trained on the 45,000
CIFAR-10 training images ships instead in ``steinebm/assets/cifar10-classifier.pt`` (written by
``scripts/train_cifar10_classifier.py``; provenance in ``assets/cifar10-classifier.md``), also
sha256-checked on every load. Its scores are *not* comparable with the paper's Inception-network
numbers (6.35 SteinGAN, 11.24 real data); they rank generators against each other and against real
CIFAR-10 images scored the same way. Any ``nn.Module`` returning logits ``(batch, classes)`` --
for instance a local copy of another network -- can be passed as ``classifier`` instead of a name.

Images are float in ``[0, 1]``: MNIST ``(n, 784)``, ``(n, 28, 28)`` or ``(n, 1, 28, 28)``;
CIFAR-10 ``(n, 3072)`` (CHW order, as ``steinebm.data``) or ``(n, 3, 32, 32)``.
"""

from __future__ import annotations

import io
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from steinebm.checksums import digest
from steinebm.errors import UserError, first_line
from steinebm.shapes import CIFAR_DIM, CIFAR_SHAPE, MNIST_DIM, MNIST_SHAPE

__all__ = [
    "MNISTClassifier",
    "MNIST_CLASSIFIER_SHA256",
    "MNISTLeNet",
    "MNIST_LENET_SHA256",
    "ResNet",
    "CIFAR10Classifier",
    "CIFAR10_CLASSIFIER_SHA256",
    "load_classifier",
    "verify_sha256",
    "inception_score",
    "mode_coverage",
    "classifier_accuracy",
]

MNIST_LENET_FILE = "mnist-lenet.pt"
# sha256 of assets/mnist-lenet.pt as printed by scripts/train_mnist_classifier.py --arch lenet.
MNIST_LENET_SHA256 = "19852298745ed6a060acc43e73ad86abcdca752498255c47aa2216e4eac8963e"
MNIST_CLASSIFIER_FILE = "mnist-classifier.pt"
# sha256 of assets/mnist-classifier.pt as printed by scripts/train_mnist_classifier.py.
MNIST_CLASSIFIER_SHA256 = "643fd693075418cd36c23e613b6f7cc96b0194723854a8eaaf5f7fcd24dd5df9"
CIFAR10_CLASSIFIER_FILE = "cifar10-classifier.pt"
# sha256 of assets/cifar10-classifier.pt as printed by scripts/train_cifar10_classifier.py.
CIFAR10_CLASSIFIER_SHA256 = "f75b52e2c01e830e3c9c369d35526e09dce93374e735aeef747d5e58c843564a"
# Per-channel mean and standard deviation of the CIFAR-10 training pixels (in [0, 1]), the usual
# constants; CIFAR10Classifier standardises its input with them.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# "mnist" and "mnist-lenet" are two independently trained MNIST classifiers of different
# architectures: an inception score of imperfect samples depends on the classifier, so MNIST
# scores are reported under both and a verdict stands only where they agree
CLASSIFIERS = ("mnist", "mnist-lenet", "cifar10")
_RANGE_TOL = 1e-3  # images may stray this far outside [0, 1] (rounding) before they are refused


def _mnist_batch(x: Tensor) -> Tensor:
    """(n, 784), (n, 28, 28) or (n, 1, 28, 28) images as (n, 1, 28, 28)."""
    if x.ndim == 2 and x.shape[1] == MNIST_DIM or x.ndim == 3 and tuple(x.shape[1:]) == MNIST_SHAPE[1:]:
        return x.reshape(x.shape[0], *MNIST_SHAPE)
    if not (x.ndim == 4 and tuple(x.shape[1:]) == MNIST_SHAPE):
        raise ValueError(f"MNIST images must be (n, 784), (n, 28, 28) or (n, 1, 28, 28); got {tuple(x.shape)}")
    return x


class MNISTClassifier(nn.Module):
    """conv32-conv32-pool-conv64-conv64-pool-fc128-fc10, 3x3 valid convolutions, BatchNorm, ReLU.

    Takes ``(n, 784)``, ``(n, 28, 28)`` or ``(n, 1, 28, 28)`` images in ``[0, 1]`` and returns
    logits ``(n, 10)``.
    """

    def __init__(self, dropout: float = 0.25) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, 32),  # 26
            *block(32, 32),  # 24
            nn.MaxPool2d(2),  # 12
            *block(32, 64),  # 10
            *block(64, 64),  # 8
            nn.MaxPool2d(2),  # 4
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(64 * 4 * 4, 128, bias=False),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Dropout(2 * dropout),
            nn.Linear(128, 10),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(_mnist_batch(x)))


class MNISTLeNet(nn.Module):
    """A LeNet-5-style second MNIST classifier, unlike :class:`MNISTClassifier` in every choice:
    5x5 convolutions with padding, max-pooling after each, no BatchNorm, tanh-free ReLU MLP head.
    conv20(5x5, pad 2)-ReLU-pool2, conv50(5x5)-ReLU-pool2, fc500-ReLU, fc10 (logits).

    Takes ``(n, 784)``, ``(n, 28, 28)`` or ``(n, 1, 28, 28)`` images in ``[0, 1]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 20, 5, padding=2),  # n 20 28 28
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # n 20 14 14
            nn.Conv2d(20, 50, 5),  # n 50 10 10
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # n 50 5 5
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(50 * 5 * 5, 500), nn.ReLU(inplace=True), nn.Linear(500, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(_mnist_batch(x)))


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut (identity, or 1x1 conv-BN where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016, Section 4.2), ``6 * blocks + 2`` layers deep.

    A 3x3 conv-BN-ReLU stem of ``widths[0]`` channels, then one stage per width of ``blocks`` basic
    blocks (two 3x3 conv-BN layers and a shortcut; every stage after the first halves the
    resolution in its first block, whose shortcut is a 1x1 conv-BN), global average pooling and a
    linear layer to ``num_classes`` logits. ``blocks=3`` with widths (16, 32, 64) is ResNet-20
    (0.27 M parameters), ``blocks=1`` ResNet-8. Works on any image size (at least 4x4 for three
    stages). Input ``(n, in_channels, H, W)`` is first standardised per channel with ``mean`` and
    ``std`` (fixed buffers, not in the ``state_dict``; default 0 and 1).

    Weights are drawn from ``generator`` (He-normal convolutions, BatchNorm scale 1 and shift 0,
    the last BatchNorm of each residual branch scale 0 so that every block starts as the identity,
    linear layer U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and bias 0), so a seed fixes the network.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: tuple[int, ...] = (16, 32, 64),
        blocks: int = 3,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes), ("blocks", blocks)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"widths must be positive integers; got {widths!r}")
        m = torch.zeros(in_channels) if mean is None else torch.tensor(mean, dtype=torch.float32)
        s = torch.ones(in_channels) if std is None else torch.tensor(std, dtype=torch.float32)
        if m.shape != (in_channels,) or s.shape != (in_channels,) or not bool((s > 0).all()):
            raise ValueError(f"mean and std must hold {in_channels} values (std > 0)")
        self.in_channels = in_channels
        self.register_buffer("mean", m.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", s.reshape(1, -1, 1, 1), persistent=False)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages: list[nn.Module] = []
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            layers = []
            for j in range(blocks):
                layers.append(_BasicBlock(c_in, c_out, 2 if i > 0 and j == 0 else 1))
                c_in = c_out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, num_classes)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw every weight afresh from ``generator`` (the global generator when ``None``)."""
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.reset_running_stats()
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Linear):
                bound = 1.0 / math.sqrt(mod.in_features)
                nn.init.uniform_(mod.weight, -bound, bound, generator=generator)
                nn.init.zeros_(mod.bias)
        for mod in self.modules():
            if isinstance(mod, _BasicBlock):
                nn.init.zeros_(mod.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"images must be (n, {self.in_channels}, H, W); got {tuple(x.shape)}")
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        h = self.stages(self.stem(h))
        return self.fc(h.mean(dim=(2, 3)))


class CIFAR10Classifier(ResNet):
    """ResNet-20 for CIFAR-10 (He et al., 2016): widths 16-32-64, three basic blocks per stage,
    1x1 conv-BN projection shortcuts, 272,474 parameters.

    Takes ``(n, 3072)`` (CHW-flattened, as ``steinebm.data``) or ``(n, 3, 32, 32)`` images in
    ``[0, 1]``, standardised inside with :data:`CIFAR10_MEAN` and :data:`CIFAR10_STD`, and returns
    logits ``(n, 10)``.
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__(3, 10, (16, 32, 64), 3, CIFAR10_MEAN, CIFAR10_STD, generator)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 2 and x.shape[1] == CIFAR_DIM:
            x = x.reshape(x.shape[0], *CIFAR_SHAPE)
        elif not (x.ndim == 4 and tuple(x.shape[1:]) == CIFAR_SHAPE):
            raise ValueError(f"CIFAR-10 images must be (n, 3072) or (n, 3, 32, 32); got {tuple(x.shape)}")
        return super().forward(x)


# --- loading -----------------------------------------------------------------------------------


def verify_sha256(path: str | os.PathLike[str], expected: str) -> bytes:
    """The bytes of ``path`` if their sha256 is ``expected``; otherwise :class:`UserError`."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"cannot read classifier weights {path} ({e.strerror or e}); reinstall steinebm") from None
    got = digest(data, "sha256")
    if got != expected.lower():
        raise UserError(
            f"classifier weights {path} have sha256 {got}, expected {expected}: the file is corrupt or "
            "was replaced; reinstall steinebm or rerun scripts/train_mnist_classifier.py "
            "(train_cifar10_classifier.py for CIFAR-10)"
        )
    return data


def _state_dict_from_bytes(data: bytes, where: str, arch: str = "MNISTClassifier") -> dict[str, Tensor]:
    try:
        # weights_only: tensors and plain containers only; a pickle that would run code is refused.
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"cannot load classifier weights {where} ({first_line(e)[:200]}); "
            f"pass a state_dict of {arch} saved with torch.save"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"classifier weights {where} are not a state_dict of tensors; save model.state_dict()")
    return state


def _shipped(name: str) -> tuple[str, str, str, type[nn.Module]]:
    """File name, expected sha256, training script and class of the shipped classifier ``name``.

    The checksums are read from the module globals at call time (tests patch them)."""
    if name == "mnist":
        return MNIST_CLASSIFIER_FILE, MNIST_CLASSIFIER_SHA256, "train_mnist_classifier.py", MNISTClassifier
    if name == "mnist-lenet":
        return MNIST_LENET_FILE, MNIST_LENET_SHA256, "train_mnist_classifier.py --arch lenet", MNISTLeNet
    return CIFAR10_CLASSIFIER_FILE, CIFAR10_CLASSIFIER_SHA256, "train_cifar10_classifier.py", CIFAR10Classifier


def load_classifier(name: str = "mnist", path: str | os.PathLike[str] | None = None) -> nn.Module:
    """The trained classifier ``name`` (``"mnist"``, ``"mnist-lenet"`` or ``"cifar10"``), in eval
    mode on the CPU.

    Without ``path`` the weights shipped with the package are loaded after their sha256 is checked
    against :data:`MNIST_CLASSIFIER_SHA256` or :data:`CIFAR10_CLASSIFIER_SHA256`. With ``path``
    the given file (a ``state_dict`` of :class:`MNISTClassifier` or :class:`CIFAR10Classifier`) is
    loaded unchecked. Loading always uses ``weights_only=True``. Any failure raises
    :class:`~steinebm.errors.UserError`. (Another network, e.g. a local copy of the ImageNet
    Inception network, is used by passing the ``nn.Module`` itself as ``classifier`` to
    :func:`inception_score` and :func:`mode_coverage`.)
    """
    if name not in CLASSIFIERS:
        raise UserError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")
    file, expected, script, arch = _shipped(name)
    if path is None:
        res = resources.files("steinebm") / "assets" / file
        where = f"steinebm/assets/{file}"
        try:
            data = res.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {where} ({e.strerror or e}); reinstall steinebm") from None
        got = digest(data, "sha256")
        if got != expected:
            raise UserError(
                f"{where} has sha256 {got}, expected {expected}: the file is corrupt or was "
                f"replaced; reinstall steinebm or rerun scripts/{script}"
            )
    else:
        where = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise UserError(f"cannot read classifier weights {where} ({e.strerror or e}); check the path") from None
    state = _state_dict_from_bytes(data, where, arch.__name__)
    model = arch()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(
            f"classifier weights {where} do not fit {arch.__name__} ({first_line(e)[:200]}); pass weights of the same "
            "architecture"
        ) from None
    return model.eval()


# --- evaluation --------------------------------------------------------------------------------


def _as_images(images: Any) -> Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor or numpy array, not {type(images).__name__}")
    if images.ndim < 1 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (n, ...); got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1]; got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).reshape(images.shape[0], -1).any(1).sum())
        raise ValueError(f"{bad} of {images.shape[0]} images contain NaN or infinite values")
    return images


def _resolve(classifier: str | nn.Module) -> tuple[nn.Module, str | None]:
    """The module and, for a shipped (named) classifier, its name."""
    if isinstance(classifier, str):
        return load_classifier(classifier), classifier
    if isinstance(classifier, nn.Module):
        return classifier, None
    raise TypeError(f"classifier must be a name ({', '.join(CLASSIFIERS)}) or an nn.Module returning logits")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")


@torch.no_grad()
def _log_probs(images: Any, classifier: str | nn.Module, batch_size: int) -> Tensor:
    """``log p(y | x)`` for every image, float64 ``(n, k)``, computed in batches in eval mode."""
    _check_batch_size(batch_size)
    x = _as_images(images)
    model, shipped = _resolve(classifier)
    if shipped is not None:
        lo, hi = float(x.min()), float(x.max())
        if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
            label = {"mnist": "MNIST", "mnist-lenet": "MNIST", "cifar10": "CIFAR-10"}.get(shipped, shipped)
            raise ValueError(
                f"images must lie in [0, 1] for the {label} classifier; got values in [{lo:.3g}, {hi:.3g}] "
                "(rescale, e.g. (x + 1) / 2 for tanh outputs)"
            )
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else x.device
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start : start + batch_size].to(device=device, dtype=dtype))
            if (
                not isinstance(logits, Tensor)
                or logits.ndim != 2
                or logits.shape[0] != min(batch_size, x.shape[0] - start)
            ):
                shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ValueError(f"the classifier must return logits of shape (batch, classes); got {shape}")
            out.append(torch.log_softmax(logits.detach().to("cpu", torch.float64), dim=1))
    finally:
        model.train(was_training)
    logp = torch.cat(out)
    if not bool(torch.isfinite(logp).all()):
        raise ValueError("the classifier returned non-finite logits")
    return logp


def _split_score(logp: Tensor) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x) over the rows of ``logp``."""
    log_py = torch.logsumexp(logp, dim=0) - math.log(logp.shape[0])
    p = logp.exp()
    # 0 log 0 = 0: classes with p(y|x) == 0 contribute nothing (and may have p(y) == 0).
    kl = torch.where(p > 0, p * (logp - log_py), torch.zeros_like(p)).sum(1)
    return math.exp(float(kl.mean()))


def inception_score(
    images: Any, classifier: str | nn.Module = "mnist", n_splits: int = 10, batch_size: int = 500
) -> tuple[float, float]:
    r"""Inception score (Salimans et al., 2016), mean and standard deviation over ``n_splits``.

    .. math:: \mathrm{IS} = \exp\big(\mathbb{E}_x\, \mathrm{KL}(p(y \mid x) \,\|\, p(y))\big),
              \qquad p(y) = \mathbb{E}_x\, p(y \mid x),

    computed on each of ``n_splits`` contiguous chunks of the images (chunk ``i`` is
    ``images[i * n // n_splits : (i + 1) * n // n_splits]``, with its own ``p(y)``), as in the
    reference code of Salimans et al.; returns the mean and the population standard deviation
    (``ddof=0``) of the chunk scores. It lies in ``[1, classes]``: ``classes`` when every image is
    classified with certainty and the classes are equally frequent, 1 when all predictions agree.
    Shuffle the images first if they are ordered (e.g. by class).

    ``classifier`` is a name (``"mnist"``: the shipped, checksummed CNN; ``"cifar10"``: the
    shipped, checksummed ResNet-20, whose scores are not on the scale of the paper's ImageNet
    Inception-network scores; images must be in ``[0, 1]`` for both) or any ``nn.Module`` returning
    logits ``(batch, classes)`` -- for instance your own local copy of the Inception network, with
    whatever resizing and normalisation it needs inside. Images go through it in batches of
    ``batch_size``, under ``no_grad`` and in eval mode, on the device of its parameters. Liu & Wang
    (2017) use 50,000 generated images.
    """
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer; got {n_splits!r}")
    x = _as_images(images)
    n = x.shape[0]
    if n < n_splits:
        raise ValueError(f"need at least n_splits={n_splits} images; got {n}")
    logp = _log_probs(x, classifier, batch_size)
    scores = [_split_score(logp[i * n // n_splits : (i + 1) * n // n_splits]) for i in range(n_splits)]
    return float(np.mean(scores)), float(np.std(scores))


def mode_coverage(images: Any, classifier: str | nn.Module = "mnist", batch_size: int = 500) -> dict[str, Any]:
    """How the predicted labels (argmax of the classifier) spread over the classes.

    ``classifier`` as in :func:`inception_score` (``"mnist"``, ``"cifar10"`` or an ``nn.Module``).

    Returns ``counts`` (list of per-class counts, length = number of classes), ``n``,
    ``classes_present`` (classes with at least one image), ``covered_1pct`` (classes with at least
    1 % of the images), ``entropy`` of the predicted-label histogram in nats (0 for a single class,
    at most ``max_entropy`` = log(classes), reached for equal counts) and ``max_entropy``.
    """
    logp = _log_probs(images, classifier, batch_size)
    n, k = logp.shape
    counts = torch.bincount(logp.argmax(1), minlength=k).tolist()
    q = np.asarray(counts, dtype=np.float64) / n
    nz = q[q > 0]
    return {
        "counts": counts,
        "n": n,
        "classes_present": int(sum(c > 0 for c in counts)),
        "covered_1pct": int(sum(c >= 0.01 * n for c in counts)),
        "entropy": float(-(nz * np.log(nz)).sum()) + 0.0,
        "max_entropy": math.log(k),
    }


def classifier_accuracy(classifier: str | nn.Module, x: Any, y: Any, batch_size: int = 500) -> float:
    """Fraction of images whose argmax prediction equals the label ``y``."""
    labels = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y).reshape(-1).long()
    logp = _log_probs(x, classifier, batch_size)
    if labels.shape[0] != logp.shape[0]:
        raise ValueError(f"{logp.shape[0]} images but {labels.shape[0]} labels")
    return float((logp.argmax(1) == labels.cpu()).double().mean())
