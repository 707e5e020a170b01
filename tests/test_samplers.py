"""Langevin dynamics against closed forms.

For a Gaussian target f(x) = -1/2 (x - mu)^T P (x - mu) the unadjusted Langevin step
``x <- x + s/2 grad f + sqrt(s) xi`` is the linear recursion ``x - mu <- A (x - mu) + sqrt(s) xi``
with ``A = I - s P / 2``. Its stationary law is N(mu, C) with C = A C A + s I, i.e.
``C = (P - s P^2 / 4)^{-1}``; for P = 1 the variance is 1 / (1 - s / 4), not 1 (the ULA bias).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import solve_discrete_lyapunov
from torch import nn

from steinebm.core.samplers import langevin

DT = torch.float64


class Gaussian(nn.Module):
    """f(x) = -1/2 (x - mu)^T P (x - mu), no closed-form score attribute: autograd is used."""

    def __init__(self, mu, P):
        super().__init__()
        self.register_buffer("mu", torch.as_tensor(mu, dtype=DT))
        self.register_buffer("P", torch.as_tensor(P, dtype=DT))

    def forward(self, x):
        z = x.reshape(x.shape[0], -1) - self.mu
        return -0.5 * ((z @ self.P) * z).sum(1)


@pytest.mark.parametrize("s", [0.1, 0.4])
def test_ula_variance_on_a_standard_gaussian_is_exactly_biased(s):
    # n independent chains: the sample variance has standard error ~ v sqrt(2 / n)
    n = 100_000
    energy = Gaussian([0.0], [[1.0]])
    x0 = torch.full((n, 1), 3.0, dtype=DT)  # far from equilibrium: (1 - s/2)^k * 3 must vanish
    n_steps = int(math.ceil(math.log(1e-8) / math.log(1 - s / 2)))
    x = langevin(energy, x0, n_steps, s, generator=torch.Generator().manual_seed(0))
    v_exact = 1.0 / (1.0 - s / 4.0)
    se = v_exact * math.sqrt(2.0 / n)
    assert abs(float(x.var()) - v_exact) < 4 * se, (float(x.var()), v_exact)
    assert abs(float(x.mean())) < 4 * math.sqrt(v_exact / n)
    if s >= 0.4:  # the bias (0.11) is ~25 standard errors: the target's variance 1 is rejected
        assert abs(float(x.var()) - 1.0) > 10 * se


def test_ula_on_a_correlated_2d_gaussian():
    mu = np.array([1.0, -2.0])
    S = np.array([[1.0, 0.6], [0.6, 2.0]])
    P = np.linalg.inv(S)
    s = 0.05
    A = np.eye(2) - 0.5 * s * P
    C = solve_discrete_lyapunov(A, s * np.eye(2))  # C = A C A^T + s I
    assert np.allclose(C, np.linalg.inv(P - s * P @ P / 4), rtol=1e-10)  # the closed form agrees
    n = 40_000
    x = langevin(
        Gaussian(mu, P), torch.zeros(n, 2, dtype=DT), 800, s, generator=torch.Generator().manual_seed(1)
    ).numpy()
    se_mean = np.sqrt(np.diag(C) / n)
    assert np.all(np.abs(x.mean(0) - mu) < 4 * se_mean)
    emp = np.cov(x.T)
    se_cov = np.sqrt((C**2 + np.outer(np.diag(C), np.diag(C))) / n)  # Gaussian sampling error of C_ij
    assert np.all(np.abs(emp - C) < 4 * se_cov), (emp, C)
    # long-run moments also match the target itself within the small ULA bias (~s/4 relative)
    assert np.allclose(emp, S, rtol=0.05, atol=0.03)


def test_noise_free_langevin_is_gradient_ascent():
    mu = np.array([0.5, -1.0, 2.0])
    P = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]])
    x0 = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0]])
    s = 0.1
    x = x0.copy()
    for _ in range(7):
        x = x + 0.5 * s * (-(x - mu) @ P)  # grad f = -P (x - mu), P symmetric
    out = langevin(Gaussian(mu, P), torch.tensor(x0), 7, s, noise_scale=0.0)
    assert np.allclose(out.numpy(), x, rtol=1e-13, atol=1e-14)


def test_noise_scale_and_step_enter_as_documented():
    # x <- x + s/2 grad f + noise_scale sqrt(s) xi, with xi read from the same generator
    mu, P = np.array([0.3, -0.7]), np.array([[1.5, 0.2], [0.2, 0.8]])
    x0 = torch.tensor([[1.0, 1.0], [2.0, -3.0], [0.0, 0.5]], dtype=DT)
    s, ns = 0.2, 0.7
    g = torch.Generator().manual_seed(5)
    x = x0.numpy().copy()
    for _ in range(4):
        xi = torch.randn(x.shape, generator=g, dtype=DT).numpy()
        x = x + 0.5 * s * (-(x - mu) @ P) + ns * math.sqrt(s) * xi
    out = langevin(Gaussian(mu, P), x0, 4, s, noise_scale=ns, generator=torch.Generator().manual_seed(5))
    assert np.allclose(out.numpy(), x, rtol=1e-13, atol=1e-14)


def test_generator_makes_runs_reproducible_and_independent_of_global_state():
    energy = Gaussian([0.0, 0.0], np.eye(2))
    x0 = torch.zeros(6, 2, dtype=DT)
    torch.manual_seed(0)
    a = langevin(energy, x0, 5, 0.1, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(123)
    b = langevin(energy, x0, 5, 0.1, generator=torch.Generator().manual_seed(7))
    c = langevin(energy, x0, 5, 0.1, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x0, torch.zeros(6, 2, dtype=DT))  # input untouched
    assert not a.requires_grad


def test_image_shaped_particles_and_zero_steps():
    energy = Gaussian(np.zeros(6), np.eye(6))
    x0 = torch.randn(4, 1, 2, 3, dtype=DT)
    out = langevin(energy, x0, 3, 0.1, noise_scale=0.0)
    assert out.shape == x0.shape
    assert torch.allclose(out, x0 * (1 - 0.05) ** 3, rtol=1e-13)
    assert torch.equal(langevin(energy, x0, 0, 0.1), x0)


def test_bad_arguments_raise():
    energy = Gaussian([0.0], [[1.0]])
    with pytest.raises(ValueError):
        langevin(energy, torch.zeros(2, 1), -1, 0.1)
    with pytest.raises(ValueError):
        langevin(energy, torch.zeros(2, 1), 1, 0.0)
