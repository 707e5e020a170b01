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
