"""Trains an MNIST classifier of the inception score and writes it into src/steinebm/assets/.

    python scripts/train_mnist_classifier.py --data-dir /path/to/mnist               # mnist-classifier.pt
    python scripts/train_mnist_classifier.py --data-dir /path/to/mnist --arch lenet  # mnist-lenet.pt

``--arch cnn`` (the default) is :class:`steinebm.evaluation.classifiers.MNISTClassifier`; ``--arch lenet`` the
independently trained second classifier :class:`steinebm.evaluation.classifiers.MNISTLeNet`, whose defaults
differ in every choice (seed 1, SGD with momentum, no shifts, 4 epochs).

Trains :class:`steinebm.evaluation.classifiers.MNISTClassifier` on the 50,000 training images of
``steinebm.data.load_mnist`` (the validation and test images are never trained on), seeded, with
Adam, a linearly decaying learning rate and random shifts of up to +-2 pixels. Reports validation
and test accuracy, saves a plain float32 ``state_dict`` (loadable with ``weights_only=True``) and
prints its size and sha256, which belongs in ``MNIST_CLASSIFIER_SHA256`` (``MNIST_LENET_SHA256``) of
``src/steinebm/evaluation/classifiers.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from steinebm.data import load_mnist
from steinebm.evaluation.classifiers import MNISTClassifier, MNISTLeNet, classifier_accuracy

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "steinebm" / "assets"
# each architecture's own defaults: seed, epochs, batch size, learning rate, shifts, optimizer, file
ARCHS = {
    "cnn": dict(seed=0, epochs=6, batch_size=128, lr=2e-3, max_shift=2, optimizer="adam", out="mnist-classifier.pt"),
    "lenet": dict(seed=1, epochs=4, batch_size=64, lr=0.05, max_shift=0, optimizer="sgd", out="mnist-lenet.pt"),
}


def random_shift(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Shift each (n, 1, 28, 28) image by its own random offset in [-max_shift, max_shift]^2, zero fill."""
    if max_shift == 0:
        return x
    n, s = x.shape[0], 2 * max_shift
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, s + 1, (n,), generator=gen)
    dx = torch.randint(0, s + 1, (n,), generator=gen)
    ar = torch.arange(28)
    rows = (dy[:, None] + ar)[:, :, None]  # n 28 1
    cols = (dx[:, None] + ar)[:, None, :]  # n 1 28
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="folder with the four MNIST files (default: STEINEBM_DATA)")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="cnn")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--max-shift", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--optimizer", choices=["adam", "sgd"], help="sgd: momentum 0.9, weight decay 5e-4")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    for key, value in ARCHS[args.arch].items():  # the architecture's defaults where not given
        if getattr(args, key) is None:
            setattr(args, key, ASSETS / value if key == "out" else value)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    ds = load_mnist(args.data_dir)
    print(f"data: {ds.source}  train {len(ds.train)}  val {len(ds.val)}  test {len(ds.test)}", flush=True)
    x_train = ds.train.x.reshape(-1, 1, 28, 28)
    y_train = ds.train.y

    model: nn.Module = MNISTClassifier() if args.arch == "cnn" else MNISTLeNet()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{type(model).__name__}: {n_params} parameters; {vars(args)}", flush=True)
    opt: torch.optim.Optimizer
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = (x_train.shape[0] + args.batch_size - 1) // args.batch_size
    total = args.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / total)
    loss_fn = nn.CrossEntropyLoss()

    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(x_train.shape[0], generator=gen)
        run_loss, run_correct, run_n = 0.0, 0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * args.batch_size : (step + 1) * args.batch_size]
            xb = random_shift(x_train[idx], args.max_shift, gen)
            yb = y_train[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += float(loss.detach()) * len(idx)
            run_correct += int((logits.argmax(1) == yb).sum())
            run_n += len(idx)
            if (step + 1) % 100 == 0 or step + 1 == steps_per_epoch:
                print(
                    f"epoch {epoch}/{args.epochs} step {step + 1}/{steps_per_epoch}  loss {run_loss / run_n:.4f}  "
                    f"train acc {run_correct / run_n:.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                    f"{time.perf_counter() - t0:.0f}s",
                    flush=True,
                )
        model.eval()
        val_acc = classifier_accuracy(model, ds.val.x, ds.val.y)
        print(f"epoch {epoch} done: val acc {val_acc:.4f}  ({time.perf_counter() - t0:.0f}s)", flush=True)
    train_time = time.perf_counter() - t0

    model.eval()
    val_acc = classifier_accuracy(model, ds.val.x, ds.val.y)
    test_acc = classifier_accuracy(model, ds.test.x, ds.test.y)
    print(f"training time {train_time:.0f}s  val acc {val_acc:.4f}  test acc {test_acc:.4f}", flush=True)

    state = {
        k: (v.detach().to(torch.float32) if v.is_floating_point() else v.detach()).contiguous().clone()
        for k, v in model.state_dict().items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    tmp = args.out.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}  {len(data)} bytes", flush=True)
    print(f"sha256 {hashlib.sha256(data).hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
