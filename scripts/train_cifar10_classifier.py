"""Trains the CIFAR-10 classifier of the inception score and writes src/steinebm/assets/cifar10-classifier.pt.

    python scripts/train_cifar10_classifier.py --data-dir /path/to/cifar10 --epochs 30

Trains :class:`steinebm.evaluation.classifiers.CIFAR10Classifier` (ResNet-20) on the 45,000 training images of
``steinebm.data.load_cifar10`` (the 5,000 validation and 10,000 test images are never trained
on), seeded, with :func:`steinebm.evaluation.transfer.fit_classifier`: SGD with Nesterov momentum 0.9,
weight decay 5e-4, a one-epoch linear warm-up to the learning rate and a cosine decay to 0, random
crops after 4-pixel zero padding and horizontal flips. Reports validation accuracy after every
epoch and validation and test accuracy at the end, saves a plain float32 ``state_dict`` (loadable
with ``weights_only=True``) and prints its size and sha256, which belongs in
``CIFAR10_CLASSIFIER_SHA256`` of ``src/steinebm/evaluation/classifiers.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import torch

from steinebm.data import load_cifar10
from steinebm.evaluation.classifiers import CIFAR10Classifier, classifier_accuracy
from steinebm.evaluation.transfer import fit_classifier

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "steinebm" / "assets" / "cifar10-classifier.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="folder with cifar-10-batches-py (default: STEINEBM_DATA)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    ap.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="forward pass under bfloat16 autocast (2x faster on CPUs with native bfloat16); weights stay float32",
    )
    ap.add_argument("--n-train", type=int, default=None, help="train on the first N training images only (smoke tests)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    ds = load_cifar10(args.data_dir)
    print(f"data: {ds.source}  train {len(ds.train)}  val {len(ds.val)}  test {len(ds.test)}", flush=True)
    x_train = ds.train.x.reshape(-1, 3, 32, 32)[: args.n_train]
    y_train = ds.train.y[: args.n_train]

    model = CIFAR10Classifier(generator=gen)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"CIFAR10Classifier (ResNet-20): {n_params} parameters; training on {x_train.shape[0]} images", flush=True)

    t0 = time.perf_counter()
    run: dict[str, Any] = {"loss": 0.0, "correct": 0, "n": 0, "t_epoch": t0}

    def on_step(info: dict[str, Any]) -> None:
        run["loss"] += info["loss"] * info["n"]
        run["correct"] += info["correct"]
        run["n"] += info["n"]
        step, steps, epoch = info["step"], info["steps_per_epoch"], info["epoch"]
        if step % 50 == 0 or step == steps:
            print(
                f"epoch {epoch}/{args.epochs} step {step}/{steps}  loss {run['loss'] / run['n']:.4f}  "
                f"train acc {run['correct'] / run['n']:.4f}  lr {info['lr']:.2e}  {time.perf_counter() - t0:.0f}s",
                flush=True,
            )
        if step == steps:
            t_train = time.perf_counter() - run["t_epoch"]
            val_acc = classifier_accuracy(model, ds.val.x, ds.val.y)  # eval mode inside, train mode restored
            print(
                f"epoch {epoch} done: val acc {val_acc:.4f}  (epoch {t_train:.0f}s, total "
                f"{time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
            run.update(loss=0.0, correct=0, n=0, t_epoch=time.perf_counter())

    fit_classifier(
        model,
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        generator=gen,
        augment=True,
        pad=4,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        bf16=args.bf16,
        on_step=on_step,
    )
    train_time = time.perf_counter() - t0

    model.eval()
    val_acc = classifier_accuracy(model, ds.val.x, ds.val.y)
    test_acc = classifier_accuracy(model, ds.test.x, ds.test.y)
    test2k = classifier_accuracy(model, ds.test.x[:2000], ds.test.y[:2000])
    print(
        f"training time {train_time:.0f}s  val acc {val_acc:.4f}  test acc {test_acc:.4f}  "
        f"(first 2,000 test images {test2k:.4f})",
        flush=True,
    )

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
