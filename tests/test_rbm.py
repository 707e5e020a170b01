"""The Gaussian-Bernoulli RBM: f(x), its score, the exact partition function and the sampler.

References: the marginal density written in numpy float64, numerical integration with scipy
(quad / dblquad) or a fine trapezoid grid, brute-force sums over the 2^l hidden states, the
closed-form Gaussian when B = 0, autograd for the score, and an exact enumeration of p(h)
for the Gibbs sampler.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import logsumexp

from steinebm.models.energies import GaussianBernoulliRBM, score


def make_rbm(d: int, l: int, seed: int, scale_B: float = 1.0, scale_bias: float = 0.5, dtype=torch.float32):
    rng = np.random.default_rng(seed)
    rbm = GaussianBernoulliRBM(d, l)
    with torch.no_grad():
        rbm.B.copy_(torch.tensor(rng.uniform(-scale_B, scale_B, size=(d, l))))
        rbm.b.copy_(torch.tensor(rng.normal(0.0, scale_bias, size=d)))
        rbm.c.copy_(torch.tensor(rng.normal(0.0, scale_bias, size=l)))
    return rbm.to(dtype)


def params_np(rbm):
    return (rbm.B.detach().double().numpy(), rbm.b.detach().double().numpy(), rbm.c.detach().double().numpy())


def f_numpy(x: np.ndarray, B: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """f(x) = b^T x - 1/2 ||x||^2 + sum_k log(exp(z_k) + exp(-z_k)), z = B^T x + c, float64."""
    x = np.atleast_2d(x)
    z = x @ B + c
    return x @ b - 0.5 * (x * x).sum(1) + np.log(np.exp(z) + np.exp(-z)).sum(1)


def brute_log_z(B: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """log sum_h (2 pi)^{d/2} exp(c^T h + 1/2 ||b + B h||^2), every h in {-1, +1}^l."""
    d, l = B.shape
    terms = []
    for h in itertools.product((-1.0, 1.0), repeat=l):
        h = np.array(h)
        v = b + B @ h
        terms.append(0.5 * d * math.log(2 * math.pi) + c @ h + 0.5 * v @ v)
    return float(logsumexp(terms))


# ----------------------------------------------------------------------------- f and score


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_forward_matches_numpy_formula(dtype, rtol):
    rbm = make_rbm(5, 3, seed=0, dtype=dtype)
    with torch.no_grad():
        rbm.c.copy_(torch.tensor([500.0, -480.0, 0.3]))  # |z| ~ 500: exp(z) overflows float32
    B, b, c = params_np(rbm)
    x = np.random.default_rng(1).normal(size=(7, 5))
    ref = f_numpy(x, B, b, c)
    got = rbm(torch.tensor(x, dtype=dtype)).detach().double().numpy()
    assert np.all(np.isfinite(got))
    assert np.allclose(got, ref, rtol=rtol, atol=0)
    # z ~ -700 from the inputs too (float64 only: the reference itself overflows past 709)
    x_big = np.full((2, 5), 100.0)
    x_big[1] *= -1
    B2 = np.full((5, 1), 1.4)
    rbm2 = GaussianBernoulliRBM(5, 1).double()
    with torch.no_grad():
        rbm2.B.copy_(torch.tensor(B2))
    ref2 = f_numpy(x_big, B2, np.zeros(5), np.zeros(1))
    got2 = rbm2(torch.tensor(x_big)).detach().numpy()
    assert np.allclose(got2, ref2, rtol=1e-13)


def test_forward_accepts_image_shaped_input():
    rbm = make_rbm(6, 2, seed=1, dtype=torch.float64)
    x = torch.randn(4, 1, 2, 3, dtype=torch.float64)
    B, b, c = params_np(rbm)
    assert np.allclose(rbm(x).detach().numpy(), f_numpy(x.reshape(4, 6).numpy(), B, b, c), rtol=1e-12)


@pytest.mark.parametrize("shape", [(6, 4), (6, 1, 2, 2)])
def test_score_matches_autograd_of_forward(shape):
    rbm = make_rbm(4, 3, seed=2, scale_B=2.0, dtype=torch.float64)
    x = 3.0 * torch.randn(*shape, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(rbm(xg).sum(), xg)
    assert torch.allclose(rbm.score(x), ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(score(rbm, x), ref, rtol=1e-12, atol=1e-12)
    # and the closed form derived by hand: b - x + B tanh(B^T x + c)
    B, b, c = params_np(rbm)
    xf = x.reshape(6, 4).numpy()
    hand = b - xf + np.tanh(xf @ B + c) @ B.T
    assert np.allclose(ref.reshape(6, 4).numpy(), hand, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- log Z


@pytest.mark.parametrize("l", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_log_partition_1d_against_quad(l, seed):
    rbm = make_rbm(1, l, seed=seed, scale_B=1.5)
    B, b, c = params_np(rbm)
    L = abs(b[0]) + np.abs(B).sum() + 15.0
    shift = float(np.max(f_numpy(np.linspace(-L, L, 2001)[:, None], B, b, c)))
    val, err = integrate.quad(lambda t: math.exp(f_numpy(np.array([[t]]), B, b, c)[0] - shift), -L, L, limit=200)
    ref = math.log(val) + shift
    assert float(rbm.log_partition()) == pytest.approx(ref, abs=1e-8)


@pytest.mark.parametrize("l", [1, 2, 3])
def test_log_partition_2d_against_dblquad(l):
    rbm = make_rbm(2, l, seed=10 + l, scale_B=1.2)
    B, b, c = params_np(rbm)

    def f_scalar(y, x):  # scalar python version of f for speed inside dblquad
        z = [B[0, k] * x + B[1, k] * y + c[k] for k in range(l)]
        return b[0] * x + b[1] * y - 0.5 * (x * x + y * y) + sum(math.log(math.exp(t) + math.exp(-t)) for t in z)

    L = float(np.abs(b).max() + np.abs(B).sum() + 9.0)
    grid = np.linspace(-L, L, 201)
    shift = max(f_scalar(y, x) for x in grid[::10] for y in grid[::10])
    val, _ = integrate.dblquad(lambda y, x: math.exp(f_scalar(y, x) - shift), -L, L, -L, L, epsabs=1e-11, epsrel=1e-10)
    ref = math.log(val) + shift
    assert float(rbm.log_partition()) == pytest.approx(ref, abs=1e-7)


@pytest.mark.parametrize("l", [1, 2, 5, 11])
def test_log_partition_against_brute_force_sum(l):
    # odd l matters: the code splits the hidden units into halves of l // 2 and l - l // 2
    rbm = make_rbm(20, l, seed=l, scale_B=0.8)
    B, b, c = params_np(rbm)
    ref = brute_log_z(B, b, c)
    assert float(rbm.log_partition()) == pytest.approx(ref, rel=1e-12, abs=1e-9)
    # a tiny block size forces many blocks of the high half: same answer
    assert float(rbm.log_partition(max_block=3)) == pytest.approx(ref, rel=1e-12, abs=1e-9)


def test_log_partition_float64_params_and_large_values():
    rbm = make_rbm(20, 5, seed=3, scale_B=6.0, scale_bias=4.0, dtype=torch.float64)
    B, b, c = params_np(rbm)
    ref = brute_log_z(B, b, c)
    assert ref > 500  # exp(ref) would overflow a float32 sum
    assert float(rbm.log_partition()) == pytest.approx(ref, rel=1e-13)


def test_log_partition_twenty_hidden_units():
    # 2^20 states; reference: a chunked brute-force sum of exp(c^T h + 1/2 ||b + B h||^2)
    d, l = 3, 20
    rbm = make_rbm(d, l, seed=4, scale_B=0.3)
    B, b, c = params_np(rbm)
    log_z = float(rbm.log_partition())
    assert math.isfinite(log_z)
    parts = []
    codes_all = np.arange(2**l, dtype=np.int64)
    bitpos = np.arange(l, dtype=np.int64)[::-1]  # a different bit order than the code's
    for start in range(0, 2**l, 2**16):
        codes = codes_all[start : start + 2**16, None]
        H = ((codes >> bitpos) & 1).astype(np.float64) * 2.0 - 1.0
        V = b + H @ B.T
        parts.append(logsumexp(H @ c + 0.5 * (V * V).sum(1)))
    ref = float(logsumexp(parts)) + 0.5 * d * math.log(2 * math.pi)
    assert log_z == pytest.approx(ref, rel=1e-11, abs=1e-8)


# ----------------------------------------------------------------------------- log p


@pytest.mark.parametrize("l", [1, 3])
def test_log_prob_integrates_to_one_1d(l):
    rbm = make_rbm(1, l, seed=20 + l, scale_B=1.5)
    lz = rbm.log_partition()
    L = 25.0
    val, _ = integrate.quad(
        lambda t: math.exp(float(rbm.log_prob(torch.tensor([[t]]), log_z=lz))), -L, L, limit=200, points=[0.0]
    )
    assert val == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("l", [2, 3])
def test_log_prob_integrates_to_one_2d(l):
    # trapezoid rule on a fine grid: for smooth, Gaussian-tailed integrands its error is
    # exponentially small in 1/step (here far below the 1e-6 tolerance)
    rbm = make_rbm(2, l, seed=30 + l, scale_B=1.2)
    L, n = 12.0, 481
    t = np.linspace(-L, L, n)
    X, Y = np.meshgrid(t, t, indexing="ij")
    pts = torch.tensor(np.stack([X.ravel(), Y.ravel()], 1))
    p = np.exp(rbm.log_prob(pts).numpy()).reshape(n, n)
    total = integrate.trapezoid(integrate.trapezoid(p, t, axis=1), t)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_log_prob_of_the_mean_model_is_a_unit_gaussian():
    # B = 0, b = mean: f(x) = b^T x - ||x||^2 / 2 + sum_k log(2 cosh c_k) and the hidden part
    # cancels against log Z, leaving log N(x; b, I)
    d, l = 6, 3
    rbm = GaussianBernoulliRBM(d, l).double()
    mean = np.linspace(-1.0, 2.0, d)
    with torch.no_grad():
        rbm.B.zero_()
        rbm.b.copy_(torch.tensor(mean))
        rbm.c.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = np.random.default_rng(5).normal(size=(8, d)) * 2
    ref = -0.5 * ((x - mean) ** 2).sum(1) - 0.5 * d * math.log(2 * math.pi)
    assert np.allclose(rbm.log_prob(torch.tensor(x)).numpy(), ref, rtol=1e-13, atol=1e-12)
    assert float(rbm.log_partition()) == pytest.approx(
        0.5 * d * math.log(2 * math.pi) + 0.5 * mean @ mean + sum(math.log(2 * math.cosh(v)) for v in (0.5, -1.0, 2.0)),
        rel=1e-13,
    )


def test_log_prob_is_float64_and_accepts_images():
    rbm = make_rbm(6, 2, seed=6)
    x = torch.randn(3, 1, 2, 3)
    lp = rbm.log_prob(x)
    assert lp.dtype == torch.float64 and lp.shape == (3,)
    B, b, c = params_np(rbm)
    ref = f_numpy(x.reshape(3, 6).double().numpy(), B, b, c) - brute_log_z(B, b, c)
    assert np.allclose(lp.numpy(), ref, rtol=1e-12)


# ----------------------------------------------------------------------------- sampler


def test_gibbs_sampler_matches_the_exact_hidden_marginal():
    # p(h) ∝ exp(c^T h + 1/2 ||b + B h||^2); the sampler returns b + B h of its last sweep
    d, l = 2, 2
    rbm = GaussianBernoulliRBM(d, l).double()
    with torch.no_grad():
        rbm.B.copy_(torch.tensor([[1.0, 0.3], [-0.4, 0.8]]))
        rbm.b.copy_(torch.tensor([0.2, -0.1]))
        rbm.c.copy_(torch.tensor([0.3, -0.5]))
    B, b, c = params_np(rbm)
    states = np.array(list(itertools.product((-1.0, 1.0), repeat=l)))
    means = b + states @ B.T  # 4 d, distinct because B is invertible
    logw = states @ c + 0.5 * (means * means).sum(1)
    p = np.exp(logw - logsumexp(logw))
    exact_mean = p @ means
    exact_sd = np.sqrt(p @ (means - exact_mean) ** 2)

    n = 4000
    g = torch.Generator().manual_seed(0)
    out = rbm.sample(n, n_steps=300, generator=g).numpy()
    assert out.shape == (n, d)
    # every output is one of the four visible means
    dist = ((out[:, None, :] - means[None]) ** 2).sum(2)  # n 4
    assert np.all(dist.min(1) < 1e-20)
    freq = np.bincount(dist.argmin(1), minlength=4) / n
    se_freq = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) < 4 * se_freq), (freq, p)
    assert np.all(np.abs(out.mean(0) - exact_mean) < 4 * exact_sd / math.sqrt(n)), (out.mean(0), exact_mean)


def test_gibbs_sampler_is_reproducible_with_a_generator():
    rbm = make_rbm(3, 2, seed=7)
    a = rbm.sample(5, n_steps=10, generator=torch.Generator().manual_seed(3))
    b = rbm.sample(5, n_steps=10, generator=torch.Generator().manual_seed(3))
    c = rbm.sample(5, n_steps=10, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_sizes_raise():
    with pytest.raises(ValueError):
        GaussianBernoulliRBM(0, 3)
    with pytest.raises(ValueError):
        GaussianBernoulliRBM(3, 0)


def test_init_follows_the_authors_code():
    rbm = GaussianBernoulliRBM(20, 10, generator=torch.Generator().manual_seed(0))
    a = 4.0 * math.sqrt(6.0 / 30.0)
    top = float(rbm.B.detach().abs().max())
    assert 0.8 * a < top <= a
    assert torch.all(rbm.b == 0) and torch.all(rbm.c == 0)
