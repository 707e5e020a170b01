"""The options that reproduce the authors' MNIST SteinGAN code (mnist/rbm_adv.py), each checked
against a hand computation written from that code with numpy loops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from steinebm.core.kernels import RBF, median_bandwidth
from steinebm.core.svgd import svgd_direction
from steinebm.engine import build as B
from steinebm.engine import train as T
from steinebm.engine.config_file import load_config
from steinebm.learners.steingan import AmortizedSVGD
from steinebm.models.energies import GaussianBernoulliRBM
from steinebm.models.mnist_nets import MNISTGenerator

PRESET = Path(__file__).parents[1] / "configs" / "fig1-steingan-authors.yaml"


def _authors_rbf(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rbm_adv.py's rbf_kernel, line by line in numpy (float64)."""
    m = X.shape[0]
    H = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            H[i, j] = ((X[i] - X[j]) ** 2).sum()
    V = np.sort(H.flatten())
    n = V.shape[0]
    med = V[n // 2 - 1 : n // 2 + 1].mean() if n % 2 == 0 else V[n // 2]
    h = math.sqrt(0.5 * med / math.log(m + 1.0))
    kxy = np.exp(-H / h**2 / 2.0)
    dxkxy = -kxy @ X + X * kxy.sum(1, keepdims=True)
    return kxy, dxkxy / h**2


def _authors_svgd(X: np.ndarray, grad: np.ndarray) -> np.ndarray:
    kxy, dxkxy = _authors_rbf(X)
    return (kxy @ grad + dxkxy) / kxy.sum(1, keepdims=True)


def test_median_of_squared_all_entries_matches_the_authors_bandwidth():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    X = x.numpy()
    H = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    V = np.sort(H.flatten())  # 36 entries: the 18th and 19th averaged
    expect = 0.5 * (V[17] + V[18]) / math.log(7.0)  # h of k = exp(-H / h) = exp(-H / (2 h_a^2))
    d2 = torch.from_numpy(H)
    got = median_bandwidth(d2, "all", "m+1", median_of="squared")
    assert float(got) == pytest.approx(expect, rel=1e-12)
    # the default averages the middle *distances* and squares: another number for this cloud
    other = median_bandwidth(d2, "all", "m+1")
    assert float(other) == pytest.approx((0.5 * (V[17] ** 0.5 + V[18] ** 0.5)) ** 2 / math.log(7.0), rel=1e-12)
    assert abs(float(other) - expect) > 1e-6


def test_authors_phi_equals_their_kernel_and_normalisation():
    g = torch.Generator().manual_seed(1)
    rbm = GaussianBernoulliRBM(7, 3, generator=g).double()
    x = torch.rand(10, 7, generator=g, dtype=torch.float64)
    s = rbm.score(x).detach()
    ours = svgd_direction(x, s, RBF("median", "all", "m+1", "squared"), "kernel_sum")
    theirs = _authors_svgd(x.numpy(), s.numpy())
    np.testing.assert_allclose(ours.detach().numpy(), theirs, rtol=1e-9, atol=1e-12)


def test_generator_loss_sum_is_m_times_the_mean():
    """The generator's gradient in its image: -phi (sum) against -phi / m (mean)."""
    g = torch.Generator().manual_seed(2)
    rbm = GaussianBernoulliRBM(4, 2, generator=g)
    x = torch.rand(5, 4, generator=g, requires_grad=True)
    grads = {}
    for red in ("mean", "sum"):
        x.grad = None
        loss, _ = AmortizedSVGD(RBF(), reduction=red).loss(rbm, x)
        loss.backward()
        grads[red] = x.grad.clone()
    phi = svgd_direction(x.detach(), rbm.score(x.detach()).detach(), RBF())
    torch.testing.assert_close(grads["sum"], -phi)
    torch.testing.assert_close(grads["mean"], -phi / 5)


def test_authors_generator_has_no_bias_no_affine_and_batch_statistics_when_sampling():
    G = MNISTGenerator(8, torch.Generator().manual_seed(3), False, "plain", "batch", 1e-8)
    names = [n for n, _ in G.named_parameters()]
    assert names == ["fc.0.weight", "fc.3.weight", "deconv.0.weight", "deconv.3.weight"]
    assert not list(G.buffers())  # no running averages kept
    xi = G.sample_noise(6, torch.Generator().manual_seed(4))
    G.eval()
    # the first block by hand: h = relu((z W - mean) / sqrt(var + 1e-8)), statistics of this batch
    z = (xi @ G.fc[0].weight.T).detach().double().numpy()
    mu, var = z.mean(0), z.var(0)
    h = np.maximum((z - mu) / np.sqrt(var + 1e-8), 0.0)
    np.testing.assert_allclose(G.fc[:3](xi).detach().double().numpy(), h, rtol=1e-4, atol=1e-5)
    # eval mode gives what train mode gives: the same batch statistics
    out_eval = G(xi)
    G.train()
    torch.testing.assert_close(G(xi), out_eval)


def test_preset_holds_the_authors_settings_and_trains(tmp_path):
    """The preset against the numbers in rbm_adv.py, and two steps of it through the loop."""
    cfg = load_config(PRESET)
    assert (cfg.lr, cfg.beta1, cfg.weight_decay, cfg.gen_lr, cfg.gen_beta1, cfg.gen_weight_decay) == (
        3e-4,
        0.5,
        1e-5,
        3e-4,
        0.5,
        1e-5,
    )
    assert (cfg.batch_size, cfg.n_hidden, cfg.noise_dim, cfg.epochs) == (100, 10, 100, 20)
    assert (cfg.median_over, cfg.log_term, cfg.median_of, cfg.normalize, cfg.gen_loss) == (
        "all",
        "m+1",
        "squared",
        "kernel_sum",
        "sum",
    )
    assert (cfg.gen_bias, cfg.gen_batchnorm, cfg.gen_bn_stats, cfg.gen_bn_eps) == (False, "plain", "batch", 1e-8)
    cfg.dataset, cfg.n_train, cfg.max_steps, cfg.progress = "mnist-embedded", 200, 2, False
    cfg.out_dir = str(tmp_path / "run")
    T.train(cfg)
    G = B.load_generator(cfg.out_dir)
    assert isinstance(G, MNISTGenerator) and not list(G.buffers())
