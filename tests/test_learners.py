"""Learning rules: the Eq. 16 limits, Stein score matching's cross derivative, Hyvärinen's
objective in closed form, contrastive gradients in closed form, training on data from a
known RBM (scored by the exact likelihood), and a two-step smoke run of every learner.

References are independent of the library: RBM scores and theta-gradients are written in
numpy from the formula, phi by the double loop of Eq. 5, derivatives in theta by central
finite differences, samples of the true RBM by an exact ancestral sampler.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from steinebm.core.kernels import RBF
from steinebm.core.samplers import langevin
from steinebm.learners import CD, HyvarinenScoreMatching, SteinCD, SteinScoreMatching, SymmetricSteinCD
from steinebm.models.energies import GaussianBernoulliRBM, score

DT = torch.float64


# ----------------------------------------------------------------------------- helpers


def make_rbm(d=3, l=2, seed=0) -> GaussianBernoulliRBM:
    rng = np.random.default_rng(seed)
    rbm = GaussianBernoulliRBM(d, l).double()
    with torch.no_grad():
        rbm.B.copy_(torch.tensor(rng.uniform(-1.2, 1.2, (d, l))))
        rbm.b.copy_(torch.tensor(rng.normal(0, 0.5, d)))
        rbm.c.copy_(torch.tensor(rng.normal(0, 0.5, l)))
    return rbm


def unpack(rbm):
    return [p.detach().numpy().copy() for p in (rbm.B, rbm.b, rbm.c)]


def rbm_score_np(x, B, b, c):
    """grad_x f = b - x + B tanh(B^T x + c), derived by hand."""
    return b - x + np.tanh(x @ B + c) @ B.T


def rbm_theta_grad_np(x, B, b, c):
    """mean over rows of grad_theta f(x): dB = x tanh(z)^T, db = x, dc = tanh(z)."""
    t = np.tanh(x @ B + c)
    return [x.T @ t / len(x), x.mean(0), t.mean(0)]


def phi_np(x, s, h, normalize="m"):
    """Eq. 5 for the RBF kernel exp(-||x - x'||^2 / h), a plain double loop."""
    m = len(x)
    out = np.zeros_like(x)
    for i in range(m):
        acc, ksum = np.zeros(x.shape[1]), 0.0
        for j in range(m):
            k = math.exp(-np.sum((x[j] - x[i]) ** 2) / h)
            acc += k * s[j] - 2.0 / h * (x[j] - x[i]) * k
            ksum += k
        out[i] = acc / (m if normalize == "m" else ksum)
    return out


def flat_grad(energy, learner, x, generator=None):
    energy.zero_grad()
    loss, stats = learner.loss(energy, x, generator)
    loss.backward()
    assert isinstance(stats, dict)
    # a parameter that grad_x f does not depend on gets no .grad from score-based rules
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in energy.parameters()])


def fd_grad(fun, params: list[np.ndarray], step=1e-6) -> np.ndarray:
    """Central finite differences of fun(params) in every parameter entry."""
    out = []
    for p in params:
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + step
            up = fun(params)
            p[idx] = old - step
            down = fun(params)
            p[idx] = old
            out.append((up - down) / (2 * step))
    return np.array(out)


class MLPEnergy(nn.Module):
    """f(x) = -1/2 ||x||^2 + mlp(x): a user-written energy without a closed-form score."""

    def __init__(self, d: int, hidden: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        return -0.5 * (x * x).sum(1) + self.net(x).squeeze(-1)


def data(m=16, d=3, seed=1):
    return torch.tensor(np.random.default_rng(seed).normal(0, 1.5, (m, d)))


# ----------------------------------------------------------------------------- Eq. 16


def slope(eps, err):
    return float(np.polyfit(np.log(eps), np.log(err), 1)[0])


@pytest.mark.parametrize("normalize", ["m", "kernel_sum"])
def test_steincd_over_eps_tends_to_stein_score_matching(normalize):
    rbm = make_rbm(3, 2, seed=0)
    x = data()
    kernel = RBF(bandwidth=1.3)  # fixed h: phi is the same in every learner
    g_ssm = flat_grad(rbm, SteinScoreMatching(kernel, normalize), x)
    assert g_ssm.norm() > 1e-2
    eps = np.array([4e-2, 2e-2, 1e-2, 5e-3, 2.5e-3, 1.25e-3])
    err1, err2 = [], []
    for e in eps:
        g1 = flat_grad(rbm, SteinCD(float(e), kernel, normalize), x) / e
        g2 = flat_grad(rbm, SymmetricSteinCD(float(e), kernel, normalize), x) / (2 * e)
        err1.append(float((g1 - g_ssm).norm()))
        err2.append(float((g2 - g_ssm).norm()))
    err1, err2 = np.array(err1), np.array(err2)
    assert 0.8 < slope(eps, err1) < 1.2, err1
    assert 1.8 < slope(eps, err2) < 2.2, err2
    assert np.all(err1[1:] / err1[:-1] < 0.6) and np.all(err2[1:] / err2[:-1] < 0.3)
    assert err1[-1] < 1e-2 * float(g_ssm.norm()) and err2[-1] < 1e-4 * float(g_ssm.norm())


def test_stein_score_matching_gradient_by_finite_differences_rbm():
    # theta -> mean_i <grad_x f(x_i; theta), phi_i>, phi held fixed, all in numpy
    rbm = make_rbm(3, 2, seed=3)
    x = data(12, 3, seed=4).numpy()
    h = 0.9
    params = unpack(rbm)
    phi = phi_np(x, rbm_score_np(x, *params), h)

    def objective(ps):
        return float(np.sum(rbm_score_np(x, *ps) * phi) / len(x))

    ref = fd_grad(objective, params)
    got = flat_grad(rbm, SteinScoreMatching(RBF(bandwidth=h)), torch.tensor(x)).numpy()
    assert np.allclose(got, ref, rtol=1e-6, atol=1e-8)
    # the loss value itself is the same objective
    loss, _ = SteinScoreMatching(RBF(bandwidth=h)).loss(rbm, torch.tensor(x))
    assert float(loss.detach()) == pytest.approx(objective(params), rel=1e-12)


def test_stein_score_matching_gradient_by_finite_differences_mlp():
    # a user energy: the score comes from autograd, the cross derivative from double backprop
    energy = MLPEnergy(3, seed=5).double()
    x = data(10, 3, seed=6)
    h = 1.1
    params = list(energy.parameters())

    def score_of(xx):
        with torch.enable_grad():
            xg = xx.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(energy(xg).sum(), xg)
        return g

    phi = torch.tensor(phi_np(x.numpy(), score_of(x).numpy(), h))

    def objective():
        return float((score_of(x) * phi).sum() / len(x))

    ref = []
    step = 1e-6
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for k in range(flat.numel()):
                old = float(flat[k])
                flat[k] = old + step
                up = objective()
                flat[k] = old - step
                down = objective()
                flat[k] = old
                ref.append((up - down) / (2 * step))
    got = flat_grad(energy, SteinScoreMatching(RBF(bandwidth=h)), x).numpy()
    assert np.allclose(got, np.array(ref), rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------- contrastive


def test_steincd_gradient_in_closed_form():
    # grad of the loss = mean grad_theta f(x-) - mean grad_theta f(x+), x- = x + eps phi
    rbm = make_rbm(3, 2, seed=7)
    x = data(10, 3, seed=8).numpy()
    h, eps = 0.8, 0.05
    B, b, c = unpack(rbm)
    x_neg = x + eps * phi_np(x, rbm_score_np(x, B, b, c), h)
    ref = [n - p for n, p in zip(rbm_theta_grad_np(x_neg, B, b, c), rbm_theta_grad_np(x, B, b, c))]
    got = flat_grad(rbm, SteinCD(eps, RBF(bandwidth=h)), torch.tensor(x)).numpy()
    assert np.allclose(got, np.concatenate([r.ravel() for r in ref]), rtol=1e-10, atol=1e-12)
    # symmetric: positives at x - eps phi
    x_pos = x - eps * phi_np(x, rbm_score_np(x, B, b, c), h)
    ref = [n - p for n, p in zip(rbm_theta_grad_np(x_neg, B, b, c), rbm_theta_grad_np(x_pos, B, b, c))]
    got = flat_grad(rbm, SymmetricSteinCD(eps, RBF(bandwidth=h)), torch.tensor(x)).numpy()
    assert np.allclose(got, np.concatenate([r.ravel() for r in ref]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_cd_gradient_in_closed_form(k):
    rbm = make_rbm(3, 2, seed=9)
    x = data(10, 3, seed=10)
    B, b, c = unpack(rbm)
    # hand-written Langevin with the same noise stream
    g = torch.Generator().manual_seed(11)
    xn = x.numpy().copy()
    for _ in range(k):
        noise = torch.randn(xn.shape, generator=g, dtype=DT).numpy()
        xn = xn + 0.5 * 0.05 * rbm_score_np(xn, B, b, c) + math.sqrt(0.05) * noise
    ref = [n - p for n, p in zip(rbm_theta_grad_np(xn, B, b, c), rbm_theta_grad_np(x.numpy(), B, b, c))]
    got = flat_grad(rbm, CD(k=k, step_size=0.05), x, torch.Generator().manual_seed(11)).numpy()
    assert np.allclose(got, np.concatenate([r.ravel() for r in ref]), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- Hyvärinen


def fisher_np(x, B, b, c):
    """E[1/2 ||grad_x f||^2 + tr grad_x^2 f], tr = -d + sum_k (1 - tanh^2 z_k) ||B[:, k]||^2."""
    t = np.tanh(x @ B + c)
    s = b - x + t @ B.T
    tr = -x.shape[1] + ((1 - t * t) * (B * B).sum(0)).sum(1)
    return float(np.mean(0.5 * (s * s).sum(1) + tr))


def test_hyvarinen_exact_trace_matches_closed_form():
    rbm = make_rbm(4, 3, seed=12)
    x = data(9, 4, seed=13)
    params = unpack(rbm)
    loss, stats = HyvarinenScoreMatching(n_probes=0).loss(rbm, x)
    assert float(loss.detach()) == pytest.approx(fisher_np(x.numpy(), *params), rel=1e-12)
    assert stats["fisher_objective"] == pytest.approx(float(loss.detach()))
    ref = fd_grad(lambda ps: fisher_np(x.numpy(), *ps), params)
    got = flat_grad(rbm, HyvarinenScoreMatching(n_probes=0), x).numpy()
    assert np.allclose(got, ref, rtol=1e-6, atol=1e-8)


def test_hyvarinen_hutchinson_is_unbiased():
    # Rademacher probes: E[v^T H v] = tr H, Var = 2 sum_{i != j} H_ij^2 per sample and probe
    rbm = make_rbm(3, 2, seed=14)
    x = data(8, 3, seed=15)
    B, b, c = unpack(rbm)
    xn = x.numpy()
    n_probes = 400
    loss, _ = HyvarinenScoreMatching(n_probes=n_probes).loss(rbm, x, torch.Generator().manual_seed(0))
    t = np.tanh(xn @ B + c)
    var = 0.0
    for i in range(len(xn)):
        H = -np.eye(3) + (B * (1 - t[i] ** 2)) @ B.T
        var += 2 * (np.sum(H**2) - np.sum(np.diag(H) ** 2)) / n_probes
    sd = math.sqrt(var) / len(xn)
    assert sd > 0
    assert abs(float(loss.detach()) - fisher_np(xn, B, b, c)) < 5 * sd
    # and one probe differs from the exact value (it is an estimate, not the trace)
    l1, _ = HyvarinenScoreMatching(n_probes=1).loss(rbm, x, torch.Generator().manual_seed(0))
    assert abs(float(l1.detach()) - fisher_np(xn, B, b, c)) > 1e-6


# ----------------------------------------------------------------------------- training


def exact_rbm_sample(rbm: GaussianBernoulliRBM, n: int, g: torch.Generator) -> torch.Tensor:
    """Ancestral sampling: h ~ p(h) ∝ exp(c^T h + 1/2 ||b + B h||^2) by enumeration, x ~ N(b + B h, I)."""
    B, b, c = (p.detach() for p in (rbm.B, rbm.b, rbm.c))
    H = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=rbm.n_hidden)), dtype=DT)
    M = b + H @ B.T
    logw = H @ c + 0.5 * (M * M).sum(1)
    idx = torch.multinomial(torch.softmax(logw, 0), n, replacement=True, generator=g)
    return M[idx] + torch.randn(n, B.shape[0], generator=g, dtype=DT)


@pytest.fixture(scope="module")
def true_rbm_data():
    d, l = 8, 3
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(d, l)))  # orthogonal columns: every p(h) between 5 % and 25 %
    true = GaussianBernoulliRBM(d, l).double()
    with torch.no_grad():
        true.B.copy_(torch.tensor(1.5 * Q))
        true.b.copy_(torch.tensor(rng.normal(0, 0.3, d)))
        true.c.copy_(torch.tensor(rng.normal(0, 0.3, l)))
    g = torch.Generator().manual_seed(0)
    x_train = exact_rbm_sample(true, 2000, g)
    x_test = exact_rbm_sample(true, 2000, g)
    return true, x_train, x_test


@pytest.mark.parametrize("name", ["cd1", "steincd"])
def test_training_on_a_known_rbm_approaches_the_true_likelihood(true_rbm_data, name):
    # Margin: 0.25 nats per test point. Measured gaps after 1000 Adam steps are ~0.07 (CD-1,
    # Langevin step 0.5) and ~0.08 (SteinCD); the init is 20-30 nats below the truth. A
    # learned model cannot beat the truth on 2000 held-out points by more than the sampling
    # noise of the difference (~0.02 nats): a larger "win" would mean a wrong log Z.
    true, x_train, x_test = true_rbm_data
    learner = CD(k=1, step_size=0.5) if name == "cd1" else SteinCD(epsilon=0.01)
    rbm = GaussianBernoulliRBM(8, 3, generator=torch.Generator().manual_seed(1)).double()
    ll_true = float(true.log_prob(x_test).mean())
    ll_init = float(rbm.log_prob(x_test).mean())
    opt = torch.optim.Adam(rbm.parameters(), lr=2e-2)
    g = torch.Generator().manual_seed(2)
    for _ in range(1000):
        idx = torch.randint(0, len(x_train), (100,), generator=g)
        loss, _ = learner.loss(rbm, x_train[idx], g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ll = float(rbm.log_prob(x_test).mean())
    assert ll - ll_init > 10.0, (ll_init, ll)
    assert ll_true - 0.25 < ll < ll_true + 0.1, (ll, ll_true)


# ----------------------------------------------------------------------------- smoke


LEARNERS = {
    "cd1": lambda: CD(k=1, step_size=0.01),
    "cd3": lambda: CD(k=3, step_size=0.01),
    "steincd": lambda: SteinCD(epsilon=0.01),
    "symmetric-steincd": lambda: SymmetricSteinCD(epsilon=0.01),
    "stein-score-matching": lambda: SteinScoreMatching(),
    "score-matching-exact": lambda: HyvarinenScoreMatching(n_probes=0),
    "score-matching-1probe": lambda: HyvarinenScoreMatching(n_probes=1),
}


@pytest.mark.parametrize("learner_name", sorted(LEARNERS))
@pytest.mark.parametrize("model", ["rbm", "mlp", "rbm-images"])
def test_every_learner_trains_two_steps(learner_name, model):
    torch.manual_seed(0)
    if model == "mlp":
        energy = MLPEnergy(4)
        x = torch.randn(12, 4)
    elif model == "rbm":
        energy = GaussianBernoulliRBM(4, 3, generator=torch.Generator().manual_seed(0))
        x = torch.randn(12, 4)
    else:
        energy = GaussianBernoulliRBM(6, 3, generator=torch.Generator().manual_seed(0))
        x = torch.randn(12, 1, 2, 3)
    before = [p.detach().clone() for p in energy.parameters()]
    learner = LEARNERS[learner_name]()
    opt = torch.optim.Adam(energy.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        loss, stats = learner.loss(energy, x, g)
        assert loss.dim() == 0 and torch.isfinite(loss)
        assert all(math.isfinite(v) for v in stats.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    names = [n for n, _ in energy.named_parameters()]
    after = list(energy.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    # the output bias of the MLP does not enter grad_x f: score-based rules leave it alone
    frozen_ok = {"net.2.bias"} if learner_name.startswith(("stein-score", "score-matching")) else set()
    for n, a, b in zip(names, after, before):
        if n in frozen_ok:
            assert torch.equal(a, b), n
        else:
            assert not torch.equal(a, b), f"{n} did not move"


def test_learner_arguments_are_checked():
    with pytest.raises(ValueError):
        CD(k=0)
    with pytest.raises(ValueError):
        SteinCD(epsilon=0.0)
    with pytest.raises(ValueError):
        HyvarinenScoreMatching(n_probes=-1)


def test_score_ignores_an_unrelated_attribute_named_score():
    class Energy(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = nn.Linear(3, 3)
            self.score = nn.Linear(3, 1)  # a "scoring head": not grad_x f

        def forward(self, x):
            return self.score(torch.tanh(self.body(x))).squeeze(-1) - 0.5 * (x * x).sum(1)

    energy = Energy()
    x = torch.randn(5, 3)
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(energy(xg).sum(), xg)
    got = score(energy, x)
    assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-6)
    # the consequence: Langevin from this energy moves along the wrong field
    out = langevin(energy, x, 1, 0.1, noise_scale=0.0)
    assert torch.allclose(out, x + 0.05 * ref, atol=1e-6)
