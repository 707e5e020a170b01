import os
from pathlib import Path

import pytest

# Tests never reach for the network.
os.environ["STEINEBM_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
FULL_MNIST = Path(os.environ.get("STEINEBM_TEST_MNIST", ROOT.parent / "shared" / "data" / "mnist"))


@pytest.fixture
def full_mnist_dir() -> Path:
    if not all((FULL_MNIST / n).exists() for n in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")):
        pytest.skip(f"full MNIST not found at {FULL_MNIST} (set STEINEBM_TEST_MNIST to the folder with the 4 files)")
    return FULL_MNIST


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors on a shared 2-core machine run far faster on one thread."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _generator_by_hand(state: dict, xi, y=None, n_classes: int = 10):
    """G(xi) (or G(xi, y)) of the project's generators in evaluation mode, from a saved state
    alone, with torch.nn.functional: the one-hot label appended to the noise for a conditional
    one; the "fc" layers (Linear; BatchNorm on its running statistics, then ReLU); the map
    reshaped to the first transposed convolution's channels on a square; the "deconv" layers
    (5 x 5 transposed convolutions, stride 2, padding 2, output padding 1; BatchNorm, then ReLU)
    and a sigmoid after the last."""
    import math

    import torch
    import torch.nn.functional as F

    def layers(prefix: str) -> list[dict]:
        idx = sorted({int(k.split(".")[1]) for k in state if k.startswith(prefix + ".")})
        return [{k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"{prefix}.{i}.")} for i in idx]

    def norm_relu(h, p: dict):
        return F.relu(F.batch_norm(h, p["running_mean"], p["running_var"], p["weight"], p["bias"], False, 0.0, 1e-5))

    h = xi if y is None else torch.cat([xi, F.one_hot(y, n_classes).to(xi.dtype)], 1)
    for p in layers("fc"):
        h = norm_relu(h, p) if "running_mean" in p else F.linear(h, p["weight"], p.get("bias"))
    deconv = layers("deconv")
    channels = deconv[0]["weight"].shape[0]
    side = math.isqrt(h.shape[1] // channels)
    h = h.reshape(len(h), channels, side, side)
    for p in deconv:
        if "running_mean" in p:
            h = norm_relu(h, p)
        else:
            h = F.conv_transpose2d(h, p["weight"], p.get("bias"), stride=2, padding=2, output_padding=1)
    return torch.sigmoid(h)


@pytest.fixture
def generator_by_hand():
    return _generator_by_hand


def _inception_score_by_hand(logits, n_splits: int = 10) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) on each of n_splits contiguous chunks (p(y) the chunk's mean
    of p(y|x)), averaged over the chunks: softmax and KL as loops in numpy float64."""
    import math

    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    n, scores = len(logits), []
    for s in range(n_splits):
        chunk = logits[s * n // n_splits : (s + 1) * n // n_splits]
        p = np.exp(chunk - chunk.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        py = p.mean(0)
        kl = 0.0
        for row in p:
            for k, pk in enumerate(row):
                if pk > 0:
                    kl += pk * math.log(pk / py[k])
        scores.append(math.exp(kl / len(p)))
    return float(np.mean(scores))


@pytest.fixture
def inception_score_by_hand():
    return _inception_score_by_hand
