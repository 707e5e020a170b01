"""Train-on-images accuracy and the duplicated-real-images baseline, against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from steinebm.evaluation.transfer import _lr_factor, duplicate_baseline, random_crop_flip, train_on_images_accuracy

K = 10  # classes
FAST = {"blocks": 1, "widths": (8, 16, 32)}  # ResNet-8, narrow: the synthetic task needs no more


def brightness_images(n_per_class: int, seed: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k: an RGB texture of mean brightness (k + 0.5) / 10 with pixel noise of +-0.03, so
    the classes are perfectly separable by mean brightness (their ranges do not overlap), and the
    brightness survives crops (away from the border) and flips."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(n_per_class)
    base = (y.double() + 0.5) / K
    noise = (torch.rand(len(y), 3, size, size, generator=g, dtype=torch.float64) - 0.5) * 0.06
    x = (base[:, None, None, None] + noise).float()
    perm = torch.randperm(len(y), generator=g)
    return x[perm], y[perm]


@pytest.fixture(scope="module")
def synthetic():
    xtr, ytr = brightness_images(40, seed=1)
    xte, yte = brightness_images(20, seed=2)
    return xtr, ytr, xte, yte


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


# --- train_on_images_accuracy --------------------------------------------------------------------


def test_separable_images_are_learned(synthetic):
    xtr, ytr, xte, yte = synthetic
    epochs: list[tuple[int, float]] = []
    # flat input with image_shape, numpy labels: the documented alternative forms
    acc = train_on_images_accuracy(
        xtr.reshape(len(xtr), -1),
        ytr.numpy(),
        xte.reshape(len(xte), -1),
        yte,
        epochs=8,
        batch_size=40,
        lr=0.05,
        seed=0,
        image_shape=(3, 8, 8),
        on_epoch=lambda epoch, accuracy: epochs.append((epoch, accuracy)),
        **FAST,
    )
    assert acc >= 0.9
    # one progress call per epoch, with that epoch's share of training images classified right
    assert [e for e, _ in epochs] == list(range(1, 9))
    assert all(0.0 <= a <= 1.0 for _, a in epochs) and epochs[-1][1] >= 0.9 > epochs[0][1]


def test_shuffled_labels_give_chance(synthetic):
    xtr, ytr, xte, yte = synthetic
    # Labels that carry no information about the class: within each class the 40 images get each
    # of the 10 labels exactly 4 times, in a random order.
    g = torch.Generator().manual_seed(3)
    shuffled = torch.empty_like(ytr)
    for k in range(K):
        members = torch.nonzero(ytr == k).reshape(-1)
        shuffled[members] = torch.arange(K).repeat(4)[torch.randperm(len(members), generator=g)]
    assert all(np.bincount(shuffled[ytr == k].numpy(), minlength=K).tolist() == [4] * K for k in range(K))
    acc = train_on_images_accuracy(xtr, shuffled, xte, yte, epochs=8, batch_size=40, lr=0.05, seed=0, **FAST)
    # The network still sorts images by brightness, so it answers (about) one label per class band
    # and its accuracy moves in steps of 0.1: the number of bands whose label happens to be right.
    # For labels unrelated to the class that number is Binomial(10, 0.1), and 0.35 (4 or more bands
    # right) has probability 0.013; a learner that leaks or recovers the true labels scores near 1.
    assert binomial_tail(K, 0.1, 4) == pytest.approx(0.0128, abs=1e-4)
    assert acc <= 0.35


def test_same_seed_same_result_and_augment_off(synthetic, capsys):
    xtr, ytr, xte, yte = synthetic
    kw = dict(epochs=2, batch_size=50, lr=0.05, **FAST)
    a = train_on_images_accuracy(xtr, ytr, xte, yte, seed=7, augment=False, **kw)
    b = train_on_images_accuracy(xtr, ytr, xte, yte, seed=7, augment=False, progress=True, **kw)
    assert a == b
    assert "train-on-images seed 7" in capsys.readouterr().err
    # the test accuracy is a count over the 200 test images
    assert a * len(yte) == pytest.approx(round(a * len(yte)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x_train": torch.rand(20, 3, 8, 8) * 2}, r"\[0, 1\]"),
        ({"x_train": torch.rand(20, 192)}, "image_shape"),
        ({"y_train": torch.zeros(19, dtype=torch.long)}, "labels"),
        ({"y_train": torch.zeros(20)}, "integer"),
        ({"x_test": torch.rand(20, 3, 4, 4)}, "differ"),
        ({"epochs": 0}, "epochs"),
        ({"x_train": torch.full((20, 3, 8, 8), float("nan"))}, "NaN"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {
        "x_train": torch.rand(20, 3, 8, 8),
        "y_train": torch.arange(20) % 2,
        "x_test": torch.rand(20, 3, 8, 8),
        "y_test": torch.arange(20) % 2,
        "epochs": 1,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train_on_images_accuracy(
            args.pop("x_train"),
            args.pop("y_train"),
            args.pop("x_test"),
            args.pop("y_test"),
            batch_size=10,
            lr=0.1,
            seed=0,
            **args,
            **FAST,
        )


# --- augmentation and schedule --------------------------------------------------------------------


def test_random_crop_flip_matches_a_loop():
    x = torch.rand(9, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    pad = 2
    out = random_crop_flip(x, pad, torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)  # the same draws, in the documented order
    dy = torch.randint(0, 2 * pad + 1, (9,), generator=g).tolist()
    dx = torch.randint(0, 2 * pad + 1, (9,), generator=g).tolist()
    mirror = (torch.rand(9, generator=g) < 0.5).tolist()
    ref = np.zeros((9, 3, 6, 5), dtype=np.float32)
    xn = x.numpy()
    for i in range(9):
        padded = np.zeros((3, 6 + 2 * pad, 5 + 2 * pad), dtype=np.float32)
        padded[:, pad : pad + 6, pad : pad + 5] = xn[i]
        crop = padded[:, dy[i] : dy[i] + 6, dx[i] : dx[i] + 5]
        ref[i] = crop[:, :, ::-1] if mirror[i] else crop
    assert np.array_equal(out.numpy(), ref)
    assert 0 < sum(mirror) < 9 and len(set(zip(dy, dx))) > 1  # the test exercised both branches
    assert torch.equal(random_crop_flip(x, 0, torch.Generator().manual_seed(1), flip=False), x)


def test_learning_rate_schedule():
    total, warmup = 100, 10
    f = [_lr_factor(s, total, warmup) for s in range(total)]
    assert f[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert f[warmup] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.5)  # halfway through the cosine
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1 :]))
    assert 0 < f[-1] < 1e-3


# --- duplicate_baseline ---------------------------------------------------------------------------


def distinct_images(sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose first pixel is their index, so every row is distinct and identifiable."""
    y = torch.cat([torch.full((s,), k) for k, s in enumerate(sizes)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    x = torch.rand(len(y), 3, 4, 4, generator=torch.Generator().manual_seed(1))
    x[:, 0, 0, 0] = torch.arange(len(y), dtype=torch.float32)
    return x, y


def check_duplicates(x, y, xd, yd, n, copies):
    assert xd.shape == (n * copies, *x.shape[1:]) and yd.shape == (n * copies,)
    idx = xd[:, 0, 0, 0].long()
    counts = np.bincount(idx.numpy(), minlength=len(x))
    assert sorted(set(counts.tolist())) == [0, copies]  # each chosen original exactly `copies` times
    assert int((counts > 0).sum()) == n
    assert torch.equal(xd, x[idx]) and torch.equal(yd, y[idx])  # rows are unaltered originals, labels kept
    return np.bincount(y[idx[:n]].numpy(), minlength=K)


@pytest.mark.parametrize("n", [500, 503, 10, 7])
def test_duplicate_baseline_balanced(n):
    sizes = [60, 75, 52, 90, 61, 58, 100, 66, 70, 55]
    x, y = distinct_images(sizes)
    xd, yd = duplicate_baseline(x, y, n=n, copies=3, seed=4)
    per_class = check_duplicates(x, y, xd, yd, n, 3)
    assert per_class.sum() == n
    assert per_class.max() - per_class.min() <= 1


def test_duplicate_baseline_paper_sizes():
    x, y = distinct_images([600] * K)
    xd, yd = duplicate_baseline(x, y)  # 500 images x 100 copies
    per_class = check_duplicates(x, y, xd, yd, 500, 100)
    assert per_class.tolist() == [50] * K


def test_duplicate_baseline_short_class():
    sizes = [60, 12, 60, 60, 60, 60, 60, 60, 60, 60]
    x, y = distinct_images(sizes)
    xd, yd = duplicate_baseline(x, y, n=500, copies=2, seed=0)
    per_class = check_duplicates(x, y, xd, yd, 500, 2)
    assert per_class[1] == 12  # all it has
    others = np.delete(per_class, 1)
    assert others.sum() == 488 and others.max() - others.min() <= 1


def test_duplicate_baseline_seeded():
    x, y = distinct_images([80] * K)
    a = duplicate_baseline(x, y, n=100, copies=2, seed=1)
    b = duplicate_baseline(x, y, n=100, copies=2, seed=1)
    c = duplicate_baseline(x, y, n=100, copies=2, seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="distinct"):
        duplicate_baseline(x, y, n=801)
    with pytest.raises(ValueError, match="copies"):
        duplicate_baseline(x, y, copies=0)
