"""Train-on-generated accuracy: how well a classifier trained on labelled images does on real ones.

Liu & Wang (2017, Section 5.2, Figure 2) train a ResNet on 50,000 labelled images drawn from a
class-conditional generator and report its accuracy on the real CIFAR-10 test set: 61.09 %
(SteinGAN), 44.78 % (DCGAN), 44.96 % for 500 real images each duplicated 100 times
(:func:`duplicate_baseline`) and 92.58 % for the real training set.

:func:`train_on_images_accuracy` does that with the CIFAR ResNet of He et al. (2016),
:class:`steinebm.evaluation.classifiers.ResNet` (ResNet-20 by default; ``blocks=1`` gives the faster ResNet-8),
trained by :func:`fit_classifier`: SGD with Nesterov momentum, weight decay, a linear warm-up and a
cosine decay of the learning rate, random crops and horizontal flips. Every random draw (weights,
batch order, augmentation, the baseline's choice of images) comes from a seeded
``torch.Generator``, so a result is reproducible from its seed on a given machine. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from steinebm.evaluation.classifiers import ResNet

__all__ = ["train_on_images_accuracy", "duplicate_baseline", "fit_classifier", "random_crop_flip"]

_RANGE_TOL = 1e-3  # pixels may stray this far outside [0, 1] (rounding) before they are refused


def random_crop_flip(x: Tensor, pad: int, generator: torch.Generator, flip: bool = True) -> Tensor:
    """Each ``(n, C, H, W)`` image zero-padded by ``pad`` pixels on every side and cropped back to
    ``H x W`` at its own uniform offset in ``[0, 2 * pad]^2``, then (``flip``) mirrored left-right
    with probability 1/2. The draws come from ``generator`` (a CPU generator) and are made whatever
    the device of ``x``."""
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    mirror = torch.rand(n, generator=generator) < 0.5
    if pad > 0:
        padded = nn.functional.pad(x, (pad,) * 4)
        dev = x.device
        rows = (dy.to(dev)[:, None] + torch.arange(h, device=dev))[:, :, None]  # n h 1
        cols = (dx.to(dev)[:, None] + torch.arange(w, device=dev))[:, None, :]  # n 1 w
        x = padded.permute(0, 2, 3, 1)[torch.arange(n, device=dev)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    if flip:
        x = torch.where(mirror.to(x.device)[:, None, None, None], x.flip(3), x)
    return x.contiguous()


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from 0 over ``warmup`` steps, then a cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def fit_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    augment: bool = True,
    pad: int | None = None,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    warmup_epochs: float = 1.0,
    label_smoothing: float = 0.0,
    bf16: bool = False,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> nn.Module:
    """Train ``model`` (in place, on the device of its parameters) to classify ``x`` as ``y``.

    ``x`` is ``(n, C, H, W)`` float and ``y`` ``(n,)`` int64, on any device. SGD with Nesterov
    ``momentum`` and ``weight_decay`` (on every parameter), batches of ``batch_size`` drawn without
    replacement each epoch (the last one may be smaller), learning rate ``lr`` warmed up linearly
    over ``warmup_epochs`` and then decayed to 0 on a cosine, cross-entropy with
    ``label_smoothing``. ``augment``: random crops after zero padding by ``pad`` pixels (default
    ``H // 8``: 4 px at 32 px) and horizontal flips. ``bf16``: forward pass under bfloat16
    autocast (twice as fast on CPUs with native bfloat16; parameters stay float32). ``on_step``, if
    given, is called after every step with ``epoch``, ``step``, ``steps_per_epoch``, ``loss``,
    ``correct``, ``n`` and ``lr``. Returns the model, in eval mode.
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number; got {lr!r}")
    n = x.shape[0]
    pad = x.shape[-2] // 8 if pad is None else pad
    param = next(iter(model.parameters()))
    device = param.device
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    warmup = min(total, int(round(warmup_epochs * steps_per_epoch)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, warmup))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    model.train()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=generator)
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size : (step + 1) * batch_size].to(x.device)
            xb = x[idx].to(device=device, dtype=torch.float32, non_blocking=True)
            yb = y[idx].to(device=device, non_blocking=True)
            if augment:
                xb = random_crop_flip(xb, pad, generator)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(xb)
                loss = loss_fn(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"the classifier's training loss became {float(loss)} at epoch {epoch}")
            if on_step is not None:
                on_step(
                    {
                        "epoch": epoch,
                        "step": step + 1,
                        "steps_per_epoch": steps_per_epoch,
                        "loss": float(loss.detach()),
                        "correct": int((logits.detach().argmax(1) == yb).sum()),
                        "n": len(idx),
                        "lr": sched.get_last_lr()[0],
                    }
                )
    return model.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    model.eval()
    device = next(iter(model.parameters())).device
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device=device, dtype=torch.float32)
        correct += int((model(xb).argmax(1).cpu() == y[start : start + batch_size].cpu()).sum())
    return correct / x.shape[0]


def _as_image_tensor(x: Any, image_shape: tuple[int, ...] | None, name: str) -> Tensor:
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, Tensor) else x
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point in [0, 1]; got dtype {t.dtype}")
    if t.ndim < 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch of images; got shape {tuple(t.shape)}")
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or math.prod(shape) != math.prod(t.shape[1:]):
            raise ValueError(f"{name} of shape {tuple(t.shape)} cannot be viewed as images of shape {shape} (C, H, W)")
        t = t.reshape(t.shape[0], *shape)
    elif t.ndim != 4:
        raise ValueError(f"{name} must be (n, C, H, W), or flat with image_shape=(C, H, W); got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}]")
    return t


def _as_labels(y: Any, n: int, name: str) -> Tensor:
    t = torch.from_numpy(np.asarray(y)) if not isinstance(y, Tensor) else y
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class labels; got dtype {t.dtype}")
    t = t.reshape(-1).long()
    if t.shape[0] != n:
        raise ValueError(f"{n} images but {t.shape[0]} labels in {name}")
    if bool((t < 0).any()):
        raise ValueError(f"{name} holds negative labels")
    return t


def train_on_images_accuracy(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device = "cpu",
    augment: bool = True,
    progress: bool = False,
    image_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    blocks: int = 3,
    widths: tuple[int, ...] = (16, 32, 64),
    weight_decay: float = 5e-4,
    bf16: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
) -> float:
    """Accuracy on ``(x_test, y_test)`` of a ResNet trained from scratch on ``(x_train, y_train)``.

    The paper's train-on-generated measure (Figure 2) with ``x_train`` labelled generated images
    and ``x_test`` the real test set. Images are float in ``[0, 1]`` (tensors or numpy arrays),
    ``(n, C, H, W)`` or flat ``(n, C*H*W)`` with ``image_shape=(C, H, W)``; labels are integers in
    ``[0, num_classes)`` (default: one more than the largest label seen).

    The network is :class:`steinebm.evaluation.classifiers.ResNet` with ``blocks`` basic blocks per stage and
    ``widths`` channels (default ResNet-20, the architecture of the shipped CIFAR-10 classifier;
    ``blocks=1`` is ResNet-8, about three times faster), its input standardised per channel with
    the mean and standard deviation of ``x_train``. It is trained by :func:`fit_classifier` (SGD,
    Nesterov momentum 0.9, ``weight_decay``, peak learning rate ``lr`` after a one-epoch linear
    warm-up, cosine decay to 0 over ``epochs``; ``augment``: random crops after padding by H // 8
    pixels, and horizontal flips, which assume left-right symmetric classes such as natural
    images). Weights, batch order and augmentation all come from ``torch.Generator`` seeded with
    ``seed``. ``progress`` shows a tqdm bar on stderr; ``on_epoch(epoch, accuracy)``, if given, is
    called after each epoch (from 1) with the epoch's training accuracy (a line of progress where a
    bar would not do, as in a log file). Suggested for 32x32 images: ``epochs=30, batch_size=128,
    lr=0.1``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    xtr = _as_image_tensor(x_train, image_shape, "x_train")
    xte = _as_image_tensor(x_test, image_shape, "x_test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"train images {tuple(xtr.shape[1:])} and test images {tuple(xte.shape[1:])} differ")
    ytr = _as_labels(y_train, xtr.shape[0], "y_train")
    yte = _as_labels(y_test, xte.shape[0], "y_test")
    k = int(max(int(ytr.max()), int(yte.max()))) + 1 if num_classes is None else num_classes
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"num_classes must be an integer of at least 2; got {k!r}")
    if int(ytr.max()) >= k or int(yte.max()) >= k:
        raise ValueError(f"labels must lie in [0, {k}); got up to {max(int(ytr.max()), int(yte.max()))}")

    dev = torch.device(device)
    xtr32 = xtr.to(torch.float32)
    channels = xtr32.transpose(0, 1).reshape(xtr32.shape[1], -1).double()
    mean = tuple(float(v) for v in channels.mean(1))
    std = tuple(max(float(v), 1e-3) for v in channels.std(1))
    gen = torch.Generator().manual_seed(seed)
    model = ResNet(xtr.shape[1], k, widths, blocks, mean, std, generator=gen).to(dev)

    bar: Any = None
    if progress:
        import sys

        from tqdm.auto import tqdm

        steps = epochs * ((xtr.shape[0] + batch_size - 1) // batch_size)
        bar = tqdm(total=steps, desc=f"train-on-images seed {seed}", unit="step", file=sys.stderr)
    seen = [0, 0]  # this epoch's correct predictions and images

    def on_step(info: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(epoch=info["epoch"], loss=f"{info['loss']:.3f}", refresh=False)
        seen[0], seen[1] = seen[0] + info["correct"], seen[1] + info["n"]
        if info["step"] == info["steps_per_epoch"]:
            if on_epoch is not None:
                on_epoch(info["epoch"], seen[0] / seen[1])
            seen[0] = seen[1] = 0

    try:
        fit_classifier(
            model,
            xtr32,
            ytr,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            generator=gen,
            augment=augment,
            weight_decay=weight_decay,
            bf16=bf16,
            on_step=on_step,
        )
    finally:
        if bar is not None:
            bar.close()
    return _accuracy(model, xte, yte, max(batch_size, 500))


def duplicate_baseline(x: Any, y: Any, n: int = 500, copies: int = 100, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The paper's baseline training set: ``n`` real images, each repeated ``copies`` times.

    The ``n`` images are drawn without replacement from ``(x, y)``, as evenly over the classes
    (the distinct labels of ``y``) as their sizes allow: every class gets ``n // classes`` images
    and a seeded random choice of ``n % classes`` classes one more; a class with too few images
    gives all it has and the shortfall goes, one image at a time, to a class with images left
    and the fewest chosen so far (the most even split possible). Which images of a class are taken is drawn from a
    ``torch.Generator`` seeded with ``seed``. Returns ``(x_dup, y_dup)``: the ``n`` chosen images
    (sorted by their index in ``x``) stacked ``copies`` times, so ``x_dup[j]`` is chosen image
    ``j % n``; ``n * copies`` rows, same trailing shape and dtype as ``x``.
    """
    for name, v in (("n", n), ("copies", copies)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    xt = torch.from_numpy(np.asarray(x)) if not isinstance(x, Tensor) else x
    yt = _as_labels(y, xt.shape[0], "y")
    if n > xt.shape[0]:
        raise ValueError(f"cannot choose n={n} distinct images from {xt.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    classes = torch.unique(yt)
    members = [torch.nonzero(yt == c).reshape(-1) for c in classes]
    sizes = [len(m) for m in members]
    k = len(classes)
    quota = [n // k] * k
    for i in torch.randperm(k, generator=gen)[: n % k].tolist():
        quota[i] += 1
    # water-filling: a class short of images passes its shortfall to the classes with room
    quota_capped = [min(q, s) for q, s in zip(quota, sizes)]
    short = sum(quota) - sum(quota_capped)
    order = torch.randperm(k, generator=gen).tolist()  # random tie-break among equal quotas
    while short > 0:
        room = [i for i in order if quota_capped[i] < sizes[i]]
        smallest = min(quota_capped[i] for i in room)
        i = next(i for i in room if quota_capped[i] == smallest)
        quota_capped[i] += 1
        short -= 1
    chosen = [m[torch.randperm(len(m), generator=gen)[:q]] for m, q in zip(members, quota_capped)]
    idx = torch.sort(torch.cat(chosen)).values
    reps = (copies,) + (1,) * (xt.ndim - 1)
    return xt[idx].repeat(*reps), yt[idx].repeat(copies)
