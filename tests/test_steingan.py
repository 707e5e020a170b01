"""The generator side: amortized SVGD (Eq. 20-21), Amortized MLE / SteinGAN (Algorithm 2, Eq. 23
with Section 5.2's discount), SteinCD-GAN(alpha), the MNIST generator / discriminator, the DCGAN
losses, and two-step smoke runs of every generator method through ``steinebm.engine.train``.

References are independent of the library: phi by the double loop of Eq. 5 in numpy (with the
median rule written out), scores by autograd of the energy's forward, per-sample generator
Jacobians by one backward pass per output coordinate, RBM theta-gradients from the formula
in numpy, and the GAN losses from ``log sigmoid`` by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from steinebm.core.kernels import RBF, ConstantKernel
from steinebm.data import load_dataset
from steinebm.engine import build as B
from steinebm.engine import train as T
from steinebm.engine.config import Config
from steinebm.learners.dcgan import DCGANLoss
from steinebm.learners.steingan import AmortizedSVGD, SteinGAN
from steinebm.models.common import uniform_noise
from steinebm.models.energies import GaussianBernoulliRBM
from steinebm.models.mnist_nets import MNISTDiscriminator, MNISTGenerator

DT = torch.float64


# ----------------------------------------------------------------------------- helpers


def make_rbm(d=4, l=3, seed=0) -> GaussianBernoulliRBM:
    rng = np.random.default_rng(seed)
    rbm = GaussianBernoulliRBM(d, l).double()
    with torch.no_grad():
        rbm.B.copy_(torch.tensor(rng.uniform(-1.2, 1.2, (d, l))))
        rbm.b.copy_(torch.tensor(rng.normal(0, 0.5, d)))
        rbm.c.copy_(torch.tensor(rng.normal(0, 0.5, l)))
    return rbm


class Quadratic(nn.Module):
    """f(x) = -1/2 (x - mu)^T A (x - mu), A = L L^T + I: a log-Gaussian with a full precision."""

    def __init__(self, d=4, seed=1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        L = torch.randn(d, d, generator=g, dtype=DT) * 0.5
        self.A = nn.Parameter(L @ L.T + torch.eye(d, dtype=DT))
        self.mu = nn.Parameter(torch.randn(d, generator=g, dtype=DT))

    def forward(self, x):
        z = x.reshape(x.shape[0], -1) - self.mu
        return -0.5 * ((z @ self.A) * z).sum(1)


def tiny_generator(seed=0, d_in=3, hidden=5, d_out=4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out)).double()


def score_autograd(energy: nn.Module, x: np.ndarray) -> np.ndarray:
    """grad_x f(x_i), one sample at a time, by autograd of the forward (never energy.score)."""
    out = []
    for row in x:
        xi = torch.tensor(row[None], dtype=DT, requires_grad=True)
        (g,) = torch.autograd.grad(energy(xi).sum(), xi)
        out.append(g[0].numpy())
    return np.array(out)


def median_h(x: np.ndarray) -> float:
    """The paper's rule: h = med^2 / log m, med the (numpy) median of the distances i < j."""
    m = len(x)
    dists = [np.linalg.norm(x[i] - x[j]) for i in range(m) for j in range(i + 1, m)]
    return float(np.median(dists)) ** 2 / math.log(m)


def phi_loop(x: np.ndarray, s: np.ndarray, h: float | None, normalize="m") -> np.ndarray:
    """Eq. 5 by a double loop: phi_i = 1/m sum_j [k(x_j, x_i) s_j + grad_{x_j} k(x_j, x_i)],
    k = exp(-||x_j - x_i||^2 / h) (h=None: the constant kernel k = 1)."""
    m = len(x)
    phi = np.zeros_like(x)
    for i in range(m):
        ksum = 0.0
        for j in range(m):
            if h is None:
                k, dk = 1.0, np.zeros_like(x[j])
            else:
                k = math.exp(-np.sum((x[j] - x[i]) ** 2) / h)
                dk = -2.0 / h * (x[j] - x[i]) * k
            phi[i] += k * s[j] + dk
            ksum += k
        phi[i] /= m if normalize == "m" else ksum
    return phi


def jacobians(G: nn.Module, xi: torch.Tensor) -> list[np.ndarray]:
    """Per-sample Jacobians dG(xi_i)/d eta, each (d_out, n_params), one backward per coordinate."""
    params = list(G.parameters())
    out = []
    for i in range(xi.shape[0]):
        y = G(xi[i : i + 1])[0]
        rows = []
        for k in range(y.shape[0]):
            gs = torch.autograd.grad(y[k], params, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in gs]).numpy())
        out.append(np.array(rows))
    return out


def flat_grad(loss: torch.Tensor, module: nn.Module) -> np.ndarray:
    gs = torch.autograd.grad(loss, list(module.parameters()), allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(gs, module.parameters())]
    ).numpy()


def rbm_theta_grad(rbm: GaussianBernoulliRBM, x: np.ndarray) -> np.ndarray:
    """mean over rows of grad_theta f(x) for (B, b, c), from the formula:
    dB = x tanh(z)^T, db = x, dc = tanh(z), z = B^T x + c."""
    B, c = rbm.B.detach().numpy(), rbm.c.detach().numpy()
    t = np.tanh(x @ B + c)
    dB = np.einsum("mi,mk->ik", x, t) / len(x)
    return np.concatenate([dB.reshape(-1), x.mean(0), t.mean(0)])


def rbm_f(rbm: GaussianBernoulliRBM, x: np.ndarray) -> np.ndarray:
    B, b, c = (p.detach().numpy() for p in (rbm.B, rbm.b, rbm.c))
    z = x @ B + c
    return x @ b - 0.5 * (x * x).sum(1) + np.log(np.exp(z) + np.exp(-z)).sum(1)


# ------------------------------------------------- 1. amortized SVGD = -1/m sum J^T phi


ENERGIES = {"rbm": lambda: make_rbm(), "quadratic": lambda: Quadratic()}


@pytest.mark.parametrize("energy_name", list(ENERGIES))
@pytest.mark.parametrize(
    "bandwidth,m,normalize",
    [(0.7, 6, "m"), (3.0, 5, "m"), ("median", 6, "m"), ("median", 5, "m"), ("median", 6, "kernel_sum")],
)
def test_amortized_svgd_gradient_equals_jacobian_transpose_phi(energy_name, bandwidth, m, normalize):
    energy = ENERGIES[energy_name]()
    G = tiny_generator(seed=m)
    xi = uniform_noise(m, 3, torch.Generator().manual_seed(7)).to(DT)
    x_gen = G(xi)
    x = x_gen.detach().numpy().copy()

    h = median_h(x) if bandwidth == "median" else float(bandwidth)
    phi = phi_loop(x, score_autograd(energy, x), h, normalize)
    J = jacobians(G, xi)
    expected = -sum(J[i].T @ phi[i] for i in range(m)) / m

    kernel = RBF(bandwidth)
    loss, stats = AmortizedSVGD(kernel, normalize=normalize).loss(energy, x_gen)
    got = flat_grad(loss, G)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert kernel.last_h == pytest.approx(h, rel=1e-12)
    assert stats["phi_norm"] == pytest.approx(np.linalg.norm(phi, axis=1).mean(), rel=1e-9)
    # the energy is not touched by the generator's loss
    assert all(p.grad is None for p in energy.parameters())


# ------------------------------------------------- 2. reductions: one particle, constant kernel


@pytest.mark.parametrize("energy_name", list(ENERGIES))
@pytest.mark.parametrize("kernel", [RBF(), RBF(bandwidth=0.3), ConstantKernel()], ids=["median", "h0.3", "const"])
def test_one_particle_is_gradient_ascent_on_f_of_G(energy_name, kernel):
    energy = ENERGIES[energy_name]()
    G = tiny_generator(seed=3)
    xi = uniform_noise(1, 3, torch.Generator().manual_seed(1)).to(DT)
    loss, _ = AmortizedSVGD(kernel).loss(energy, G(xi))
    got = flat_grad(loss, G)
    expected = flat_grad(-energy(G(xi)).sum(), G)  # d/d eta of -f(G(xi))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)
    assert np.linalg.norm(expected) > 1e-3  # not a vacuous 0 == 0


@pytest.mark.parametrize("energy_name", list(ENERGIES))
def test_constant_kernel_moves_every_sample_along_the_mean_score(energy_name):
    energy = ENERGIES[energy_name]()
    m = 7
    G = tiny_generator(seed=4)
    xi = uniform_noise(m, 3, torch.Generator().manual_seed(2)).to(DT)
    x_gen = G(xi)
    x = x_gen.detach().numpy().copy()
    s_bar = score_autograd(energy, x).mean(0)
    J = jacobians(G, xi)
    expected = -sum(J[i].T @ s_bar for i in range(m)) / m
    loss, _ = AmortizedSVGD(ConstantKernel()).loss(energy, x_gen)
    np.testing.assert_allclose(flat_grad(loss, G), expected, rtol=1e-9, atol=1e-12)
    # and it differs from the per-sample (amortized MAP) direction -1/m sum J_i^T s_i
    s = score_autograd(energy, x)
    per_sample = -sum(J[i].T @ s[i] for i in range(m)) / m
    assert np.linalg.norm(per_sample - expected) > 1e-3 * np.linalg.norm(expected)


# ------------------------------------------------- 3. the energy step: gamma, adaptive gamma, SteinCD


def _batches(rbm, seed=0, m=6):
    rng = np.random.default_rng(seed)
    x_pos = rng.normal(0, 1, (m, rbm.n_visible))
    x_gen = rng.normal(0.3, 1.5, (m, rbm.n_visible))
    return x_pos, x_gen


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.7])
def test_energy_step_discounts_generated_batch_by_one_minus_gamma(gamma):
    rbm = make_rbm()
    x_pos, x_gen = _batches(rbm)
    sg = SteinGAN(gamma=gamma)
    loss, stats = sg.energy_loss(rbm, torch.tensor(x_pos), torch.tensor(x_gen, requires_grad=True), steincd=False)
    expected = -(rbm_theta_grad(rbm, x_pos) - (1.0 - gamma) * rbm_theta_grad(rbm, x_gen))
    np.testing.assert_allclose(flat_grad(loss, rbm), expected, rtol=1e-10, atol=1e-12)
    assert stats["gamma"] == gamma and stats["steincd"] == 0.0
    assert stats["f_pos"] == pytest.approx(rbm_f(rbm, x_pos).mean(), rel=1e-10)
    assert stats["f_neg"] == pytest.approx(rbm_f(rbm, x_gen).mean(), rel=1e-10)


@pytest.mark.parametrize("real_above_generated", [True, False])
def test_adaptive_gamma_applies_when_real_energy_is_above_generated(real_above_generated):
    rbm = make_rbm()
    rng = np.random.default_rng(3)
    near = rbm.b.detach().numpy() + rng.normal(0, 0.3, (6, 4))  # high f (low energy)
    far = rbm.b.detach().numpy() + rng.normal(0, 0.3, (6, 4)) + 4.0  # low f (high energy)
    # real energy above generated  <=>  mean f(x+) < mean f(x-)
    x_pos, x_gen = (far, near) if real_above_generated else (near, far)
    f_pos, f_neg = rbm_f(rbm, x_pos).mean(), rbm_f(rbm, x_gen).mean()
    assert (f_pos < f_neg) == real_above_generated  # the set-up does what it says

    sg = SteinGAN(gamma=0.7, gamma_adaptive=0.9)
    loss, stats = sg.energy_loss(rbm, torch.tensor(x_pos), torch.tensor(x_gen), steincd=False)
    used = 0.9 if real_above_generated else 0.7
    assert stats["gamma"] == used
    assert stats["f_pos"] == pytest.approx(f_pos, rel=1e-10)
    assert stats["f_neg"] == pytest.approx(f_neg, rel=1e-10)
    expected = -(rbm_theta_grad(rbm, x_pos) - (1.0 - used) * rbm_theta_grad(rbm, x_gen))
    np.testing.assert_allclose(flat_grad(loss, rbm), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("real_above_generated", [True, False])
def test_adaptive_gamma_rule_of_the_authors_code_raises_when_real_energy_is_lower(real_above_generated):
    rbm = make_rbm()
    rng = np.random.default_rng(4)
    near = rbm.b.detach().numpy() + rng.normal(0, 0.3, (6, 4))
    far = rbm.b.detach().numpy() + rng.normal(0, 0.3, (6, 4)) + 4.0
    x_pos, x_gen = (far, near) if real_above_generated else (near, far)
    sg = SteinGAN(gamma=0.7, gamma_adaptive=0.9, gamma_raise_when="real_energy_lower")
    loss, stats = sg.energy_loss(rbm, torch.tensor(x_pos), torch.tensor(x_gen), steincd=False)
    used = 0.7 if real_above_generated else 0.9  # the opposite of the paper's reading
    assert stats["gamma"] == used
    expected = -(rbm_theta_grad(rbm, x_pos) - (1.0 - used) * rbm_theta_grad(rbm, x_gen))
    np.testing.assert_allclose(flat_grad(loss, rbm), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="gamma_raise_when"):
        SteinGAN(gamma=0.7, gamma_adaptive=0.9, gamma_raise_when="sometimes")


class _BatchNormEnergy(nn.Module):
    """f(x) = -sum(BN(x)^2): depends on the batch it is evaluated with (training mode)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(d, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(self.bn(x) ** 2).sum(1)


def test_energy_step_scores_real_and_generated_batches_each_with_its_own_batch_statistics():
    torch.manual_seed(0)
    x_pos, x_gen = torch.randn(8, 3), torch.randn(8, 3) * 5.0 + 3.0
    energy = _BatchNormEnergy(3)
    loss, stats = SteinGAN(gamma=0.7).energy_loss(energy, x_pos, x_gen, steincd=False)

    def alone(x: torch.Tensor) -> float:  # BN of a batch by its own mean and biased variance, by hand
        z = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
        return float(-(z**2).sum(1).mean())

    assert stats["f_pos"] == pytest.approx(alone(x_pos), rel=1e-5)
    assert stats["f_neg"] == pytest.approx(alone(x_gen), rel=1e-5)
    assert float(loss) == pytest.approx(0.3 * alone(x_gen) - alone(x_pos), rel=1e-5)


@pytest.mark.parametrize("cd_bandwidth", ["median", 0.8])
def test_steincd_step_uses_svgd_negatives_without_discount(cd_bandwidth):
    rbm = make_rbm()
    x_pos, x_gen = _batches(rbm, seed=5)
    eps = 0.05
    sg = SteinGAN(gamma=0.7, gamma_adaptive=0.9, epsilon=eps, cd_kernel=RBF(cd_bandwidth))
    loss, stats = sg.energy_loss(rbm, torch.tensor(x_pos), torch.tensor(x_gen), steincd=True)

    h = median_h(x_pos) if cd_bandwidth == "median" else cd_bandwidth
    x_neg = x_pos + eps * phi_loop(x_pos, score_autograd(rbm, x_pos), h)
    expected = -(rbm_theta_grad(rbm, x_pos) - rbm_theta_grad(rbm, x_neg))  # SteinCD, Algorithm 1
    np.testing.assert_allclose(flat_grad(loss, rbm), expected, rtol=1e-9, atol=1e-12)
    assert stats["gamma"] == 0.0 and stats["steincd"] == 1.0
    assert stats["f_neg"] == pytest.approx(rbm_f(rbm, x_neg).mean(), rel=1e-10)
    # the generated batch plays no part
    loss2, _ = sg.energy_loss(rbm, torch.tensor(x_pos), torch.tensor(x_gen + 10.0), steincd=True)
    assert float(loss2.detach()) == pytest.approx(float(loss.detach()), rel=1e-12)


# ------------------------------------------------- 4. alpha: the SteinCD coin


@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.5])
def test_alpha_is_the_frequency_of_steincd_steps(alpha):
    n = 20_000
    sg = SteinGAN(alpha=alpha)
    g = torch.Generator().manual_seed(123)
    draws = np.array([sg.use_steincd(g) for _ in range(n)])
    se = math.sqrt(alpha * (1 - alpha) / n)
    assert abs(draws.mean() - alpha) < 4 * se
    g2 = torch.Generator().manual_seed(123)
    assert np.array_equal(draws[:2000], [sg.use_steincd(g2) for _ in range(2000)])
    g3 = torch.Generator().manual_seed(124)
    assert not np.array_equal(draws[:2000], [sg.use_steincd(g3) for _ in range(2000)])


def test_alpha_zero_never_and_one_always():
    g = torch.Generator().manual_seed(0)
    assert not any(SteinGAN(alpha=0.0).use_steincd(g) for _ in range(2000))
    assert all(SteinGAN(alpha=1.0).use_steincd(g) for _ in range(2000))
    assert not any(SteinGAN().use_steincd(None) for _ in range(100))  # default alpha = 0: SteinGAN


# ------------------------------------------------- 5. a mixture of Gaussians: kernel vs no kernel

MODES = ((-3.0, 0.0), (3.0, 0.0))
SIGMA = 0.5


class TwoGaussians(nn.Module):
    """log(0.5 N(x; (-3, 0), 0.25 I) + 0.5 N(x; (3, 0), 0.25 I)), normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mu", torch.tensor(MODES))

    def forward(self, x):
        d2 = ((x[:, None, :] - self.mu[None]) ** 2).sum(-1)  # m 2
        lp = -d2 / (2 * SIGMA**2) - math.log(2 * math.pi * SIGMA**2) + math.log(0.5)
        return torch.logsumexp(lp, 1)


def _train_mog_generator(kernel, steps=1500, m=100, lr=1e-2, seed=0) -> torch.Tensor:
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    with torch.no_grad():
        # zero biases make G odd, so the initial samples are symmetric about 0 and straddle both
        # modes; a wider last layer spreads them over about [-2, 2]
        G[4].weight.mul_(10.0)
        for layer in (G[0], G[2], G[4]):
            layer.bias.zero_()
    opt = torch.optim.Adam(G.parameters(), lr=lr)
    energy, amortized = TwoGaussians(), AmortizedSVGD(kernel)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        loss, _ = amortized.loss(energy, G(uniform_noise(m, 2, g)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return G(uniform_noise(4000, 2, g))


def _median_radius(x: torch.Tensor) -> float:
    """Median distance of the samples to their coordinate-wise median: a spread measure that a
    few stragglers do not inflate. For N(mu, s^2 I_2) it is s sqrt(2 log 2) = 1.177 s."""
    return float((x - x.median(0).values).norm(dim=1).median())


@pytest.fixture(scope="module")
def mog_samples():
    return {"rbf": _train_mog_generator(RBF()), "constant": _train_mog_generator(ConstantKernel())}


def test_amortized_svgd_with_rbf_kernel_covers_both_modes(mog_samples):
    x = mog_samples["rbf"]
    assert torch.isfinite(x).all()
    left = x[:, 0] < 0
    assert 0.25 < float(left.double().mean()) < 0.75
    for mask, mu in zip((left, ~left), MODES):
        xm = x[mask]
        assert torch.allclose(xm.mean(0), torch.tensor(mu), atol=0.3), (xm.mean(0), mu)
        std = xm.std(0)
        assert ((0.3 < std) & (std < 0.8)).all(), std
        assert 0.6 * 1.177 * SIGMA < _median_radius(xm) < 1.4 * 1.177 * SIGMA


def test_amortized_svgd_without_kernel_loses_diversity(mog_samples):
    x_rbf, x_const = mog_samples["rbf"], mog_samples["constant"]
    assert torch.isfinite(x_const).all()

    def dominant(x):
        left = x[:, 0] < 0
        return x[left] if left.sum() >= (~left).sum() else x[~left]

    r_rbf, r_const = _median_radius(dominant(x_rbf)), _median_radius(dominant(x_const))
    assert r_const < 0.3 * r_rbf, (r_const, r_rbf)
    # and the collapse is in every mode that the no-kernel generator still reaches
    left = x_const[:, 0] < 0
    for mask in (left, ~left):
        if int(mask.sum()) >= 50:
            assert _median_radius(x_const[mask]) < 0.3 * r_rbf


# ------------------------------------------------- 6. smoke: every generator method through train()

SMOKE = dict(dataset="mnist-embedded", n_train=200, batch_size=20, progress=False, max_steps=2)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist-embedded")


@pytest.fixture(scope="module")
def energy_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("steincd") / "run"
    T.train(Config(method="steincd", out_dir=str(out), **SMOKE), dataset=data)
    return out


def _finite(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _changed(before: dict, after: dict) -> bool:
    """Whether a parameter moved (BatchNorm's running statistics move in any forward pass)."""
    keys = [k for k in before if not k.endswith(BUFFERS)]
    assert keys
    return any(not torch.equal(before[k], after[k]) for k in keys)


def _cases(energy_run):
    return {
        "steingan": dict(method="steingan", gamma=0.7, gamma_adaptive=0.9),
        "dcgan": dict(method="dcgan"),
        "steincd-gan": dict(method="steingan", alpha=0.5, gen_kernel="constant"),
        "steincd-gan-own-adam": dict(method="steingan", alpha=0.5, steincd_optimizer="own"),
        "amortized-svgd": dict(method="amortized-svgd", energy_from=str(energy_run)),
    }


CASES = ["steingan", "dcgan", "steincd-gan", "steincd-gan-own-adam", "amortized-svgd"]


# MNISTGenerator's layers followed by BatchNorm
DEAD_BIASES = ("fc.0.bias", "fc.3.bias", "deconv.0.bias")


def _hand_steingan_steps(cfg: Config, batches: list[torch.Tensor], seed: int, redraw: str = "") -> dict:
    """Algorithm 2 composed by hand from the learner objects, on freshly built modules with the
    run's initial weights and plain torch Adams. Per step: xi ~ U(-1, 1)^noise_dim for m particles,
    drawn once from the step's stream, and x- = G(xi); the generator's Adam step on the
    amortized-SVGD surrogate at x-; the coin (alpha) from the same stream; the energy's Adam step
    (SteinCD's own Adam after a coin of True, with steincd_optimizer=own) on SteinGAN's surrogate
    with the real batch and that same x-, drawn before the generator moved.

    ``redraw`` composes it otherwise, for the test to show that it can tell: "moved" gives the
    energy step G(xi) through the updated generator, "fresh" a new draw of xi."""
    parts = T.build_parts(cfg, 784, torch.device("cpu"))  # only for the initial weights
    model, G = parts.modules["model"], parts.modules["generator"]

    def adam(module: nn.Module, lr: float, beta1: float) -> torch.optim.Adam:
        return torch.optim.Adam(module.parameters(), lr=lr, betas=(beta1, cfg.beta2))

    opt, opt_g = adam(model, cfg.lr, cfg.beta1), adam(G, cfg.gen_lr, cfg.gen_beta1)
    opt_cd = adam(model, cfg.lr, cfg.beta1) if cfg.steincd_optimizer == "own" else opt
    sg = SteinGAN(
        RBF(), cfg.gamma, cfg.gamma_adaptive, cfg.alpha, cfg.epsilon, RBF(), gamma_raise_when=cfg.gamma_raise_when
    )
    rng = torch.Generator().manual_seed(seed)

    def noise(m: int) -> torch.Tensor:
        return torch.rand(m, cfg.noise_dim, generator=rng) * 2.0 - 1.0

    out: dict = {"losses": [], "coins": []}
    for x_pos in batches:
        xi = noise(len(x_pos))
        x_gen = G(xi)
        g_loss, _ = sg.generator_loss(model, x_gen)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        coin = sg.use_steincd(rng)
        x_neg = x_gen
        if redraw == "moved":
            x_neg = G(xi)
        elif redraw == "fresh":
            x_neg = G(noise(len(x_pos)))
        e_loss, stats = sg.energy_loss(model, x_pos, x_neg, coin)
        (opt_cd if coin else opt).zero_grad()
        e_loss.backward()
        (opt_cd if coin else opt).step()
        out["losses"].append([float(e_loss.detach()), float(g_loss.detach()), stats["gamma"], stats["steincd"]])
        out["coins"].append(coin)
    out["modules"] = {"model": model.state_dict(), "generator": G.state_dict()}
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_steingan_step_is_algorithm_2_composed_by_hand(alpha, data):
    """build_parts' SteinGAN step (SteinCD-GAN(0.5) with its own SteinCD Adam too) against
    :func:`_hand_steingan_steps` on the same stream: the same losses, gammas and coins, and the
    same parameters after 4 steps. The energy step's generated batch is the one the generator
    step used, drawn once per step: a composition that scores G's moved output, or new noise,
    has another energy loss from the first step on."""
    cfg = Config(
        dataset="mnist-embedded",
        batch_size=8,
        out_dir="unused",
        method="steingan",
        gamma=0.7,
        gamma_adaptive=0.9,
        alpha=alpha,
        steincd_optimizer="own",
        weight_decay=0.0,
    ).validate()
    batches = [data.train.x[8 * i : 8 * (i + 1)] for i in range(4)]
    parts = T.build_parts(cfg, 784, torch.device("cpu"))
    rng = torch.Generator().manual_seed(3)
    losses = []
    for x in batches:
        loss, stats = parts.step(x, rng)
        losses.append([float(loss.detach()), stats["g_loss"], stats["gamma"], stats["steincd"]])
    hand = _hand_steingan_steps(cfg, batches, seed=3)
    np.testing.assert_allclose(np.array(losses), np.array(hand["losses"]), rtol=1e-4, atol=1e-6)
    if alpha:
        assert set(hand["coins"]) == {False, True}  # both kinds of step were taken
    got = {name: mod.state_dict() for name, mod in parts.modules.items()}
    for name, state in hand["modules"].items():
        for k, v in state.items():
            # the biases of the generator's layers that feed a BatchNorm have a gradient of 0 up to
            # rounding (the normalisation removes any shift), which Adam turns into steps of
            # either sign: they are not compared
            if not k.endswith(BUFFERS) and not (name == "generator" and k in DEAD_BIASES):
                torch.testing.assert_close(got[name][k], v, rtol=1e-4, atol=1e-6, msg=f"{name}.{k}")
    for redraw in ("moved", "fresh") if not alpha else ():
        other = _hand_steingan_steps(cfg, batches[:1], seed=3, redraw=redraw)["losses"][0]
        assert other[0] != pytest.approx(losses[0][0], rel=1e-4, abs=1e-6), redraw  # the first energy loss


@pytest.mark.parametrize("own", [False, True])
def test_steincd_steps_with_their_own_adam_state(own, data, monkeypatch):
    """steincd_optimizer=own: a SteinCD step after a SteinGAN step is Adam's first step on the
    SteinCD gradient alone, -lr * sign(g); shared: both kinds go through one Adam state."""
    cfg = Config(
        dataset="mnist-embedded",
        batch_size=50,
        out_dir="unused",
        method="steingan",
        alpha=0.5,
        steincd_optimizer="own" if own else "shared",
        weight_decay=0.0,
        lr=1e-3,
    ).validate()
    parts = T.build_parts(cfg, 784, torch.device("cpu"))
    model = parts.modules["model"]
    coins = iter([False, True])  # one SteinGAN step, then one SteinCD step
    monkeypatch.setattr(SteinGAN, "use_steincd", lambda self, generator=None: next(coins))
    x, rng = data.train.x[:50], torch.Generator().manual_seed(0)
    parts.step(x, rng)
    # the SteinCD gradient at theta after the first step, by the learner's own surrogate
    sg = SteinGAN(RBF(), epsilon=cfg.epsilon, cd_kernel=RBF())
    model.zero_grad()
    sg.energy_loss(model, x, x, steincd=True)[0].backward()
    g = model.B.grad.detach().clone()
    B1 = model.B.detach().clone()
    parts.step(x, rng)
    delta = model.B.detach() - B1
    big = g.abs() > 1e-5  # Adam's eps (1e-8) is negligible there
    assert big.sum() > 100
    first_step = -cfg.lr * torch.sign(g)
    if own:
        assert set(parts.optimizers) == {"optimizer", "gen_optimizer", "cd_optimizer"}
        torch.testing.assert_close(delta[big], first_step[big], rtol=1e-3, atol=1e-7)
        steps = {k: int(o.state[model.B]["step"]) for k, o in parts.optimizers.items() if k != "gen_optimizer"}
        assert steps == {"optimizer": 1, "cd_optimizer": 1}
    else:
        assert "cd_optimizer" not in parts.optimizers
        assert int(parts.optimizers["optimizer"].state[model.B]["step"]) == 2
        # the SteinGAN step's momentum dominates: the update is not the SteinCD gradient's sign
        assert (torch.sign(delta[big]) != torch.sign(first_step[big])).float().mean() > 0.1


@pytest.mark.parametrize("case", CASES)
def test_build_parts_one_step(case, energy_run, data):
    kw = _cases(energy_run)[case]
    cfg = Config(dataset="mnist-embedded", batch_size=8, out_dir="unused", progress=False, **kw).validate()
    parts = T.build_parts(cfg, 784, torch.device("cpu"))
    before = {name: {k: v.clone() for k, v in mod.state_dict().items()} for name, mod in parts.modules.items()}
    loss, stats = parts.step(data.train.x[:8], torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in stats.values())
    after = {name: mod.state_dict() for name, mod in parts.modules.items()}
    assert all(_finite(s) for s in after.values())
    assert _changed(before["generator"], after["generator"])
    if case == "amortized-svgd":
        assert parts.frozen == {"model"}
        assert not _changed(before["model"], after["model"])
        assert all(not p.requires_grad for p in parts.modules["model"].parameters())
    else:
        assert _changed(before["model"], after["model"])


@pytest.mark.parametrize("case", CASES)
def test_train_two_steps(case, energy_run, data, tmp_path, generator_by_hand):
    kw = _cases(energy_run)[case]
    cfg = Config(out_dir=str(tmp_path / case), log_every=1, **SMOKE, **kw)
    init = {
        name: {k: v.clone() for k, v in mod.state_dict().items()}
        for name, mod in T.build_parts(cfg, 784, torch.device("cpu")).modules.items()
    }
    rec = T.train(cfg, dataset=data)
    assert rec["step"] == 2
    ck = T.load_checkpoint(cfg.out_dir)
    assert ck["step"] == 2
    assert _finite(ck["generator"]) and _finite(ck["model"])
    assert _changed(init["generator"], ck["generator"])
    if case == "amortized-svgd":
        source = T.load_checkpoint(energy_run)["model"]
        assert all(torch.equal(ck["model"][k], source[k]) for k in source)  # frozen, and the source's
        assert "optimizer" not in ck
    else:
        assert _changed(init["model"], ck["model"])
    lines = [json.loads(s) for s in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(math.isfinite(r["loss"]) for r in steps)
    if case == "steingan":
        assert all(r["gamma"] in (0.7, 0.9) and r["steincd"] == 0.0 for r in steps)
        assert all((r["gamma"] == 0.9) == (r["f_pos"] < r["f_neg"]) for r in steps)

    G = B.load_generator(cfg.out_dir)
    assert not G.training
    with torch.no_grad():
        x = G(G.sample_noise(5, torch.Generator().manual_seed(0)))
    assert x.shape == (5, 1, 28, 28)
    # the trained generator in evaluation mode, written out from the checkpoint's tensors, on
    # xi ~ U(-1, 1)^100 drawn by hand from the same seed
    xi = torch.rand(5, 100, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(x, generator_by_hand(ck["generator"], xi), rtol=1e-5, atol=1e-6)


def test_load_generator_refuses_energy_only_run(energy_run):
    with pytest.raises(T.UserError):
        B.load_generator(energy_run)


# ------------------------------------------------- 7. MNIST generator, discriminator, DCGAN losses


def test_mnist_generator_shapes_range_and_init():
    G = MNISTGenerator(generator=torch.Generator().manual_seed(0))
    xi = G.sample_noise(4000, torch.Generator().manual_seed(1))
    assert xi.shape == (4000, 100)
    assert float(xi.min()) >= -1.0 and float(xi.max()) < 1.0
    assert abs(float(xi.mean())) < 0.01 and abs(float(xi.var()) - 1.0 / 3.0) < 0.01  # U(-1, 1)
    with torch.no_grad():
        x = G(xi[:6])
    assert x.shape == (6, 1, 28, 28)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    layers = [mod for mod in G.modules() if isinstance(mod, (nn.Linear, nn.ConvTranspose2d))]
    assert sum(isinstance(mod, nn.Linear) for mod in layers) == 2
    for mod in layers:
        w = mod.weight.detach().double()
        assert abs(float(w.std()) - 0.02) < 0.002, (mod, float(w.std()))
        assert abs(float(w.mean())) < 0.002
        assert torch.count_nonzero(mod.bias) == 0
    # the seed alone fixes the weights, whatever the global generator's state
    torch.manual_seed(12345)
    G2 = MNISTGenerator(generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(G.parameters(), G2.parameters()))  # (BN buffers moved)
    G3 = MNISTGenerator(generator=torch.Generator().manual_seed(1))
    assert not torch.equal(G.fc[0].weight, G3.fc[0].weight)


def test_mnist_discriminator_returns_one_logit_per_image():
    D = MNISTDiscriminator(generator=torch.Generator().manual_seed(0))
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = D(x)
    assert out.shape == (3,) and torch.isfinite(out).all()
    assert D(x.reshape(3, 784)).shape == (3,)  # flat rows as the data loader gives them


def test_dcgan_losses_match_hand_formulas():
    rng = np.random.default_rng(0)
    d_real, d_fake = rng.normal(0, 3, 9), rng.normal(0, 3, 9)

    def log_sigmoid(z):
        return -np.log1p(np.exp(-z))

    d_expected = -np.mean(log_sigmoid(d_real)) - np.mean(log_sigmoid(-d_fake))  # log(1 - s(z)) = log s(-z)
    g_expected = -np.mean(log_sigmoid(d_fake))  # non-saturating
    got_d = DCGANLoss.discriminator_loss(torch.tensor(d_real), torch.tensor(d_fake))
    got_g = DCGANLoss.generator_loss(torch.tensor(d_fake))
    assert float(got_d) == pytest.approx(d_expected, rel=1e-12)
    assert float(got_g) == pytest.approx(g_expected, rel=1e-12)
    # the gradient of the generator's loss in a logit is -(1 - sigmoid(z)) / m
    z = torch.tensor(d_fake, requires_grad=True)
    DCGANLoss.generator_loss(z).backward()
    np.testing.assert_allclose(z.grad.numpy(), -(1 - 1 / (1 + np.exp(-d_fake))) / 9, rtol=1e-12)
