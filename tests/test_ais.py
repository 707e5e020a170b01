"""Annealed importance sampling: the RBM estimate against the exact enumeration, the base normaliser
against numerical integration, unbiasedness in Z of short chains, the generic geometric-path AIS
against closed-form Gaussian normalisers, determinism and argument checks.

References: ``GaussianBernoulliRBM.log_partition`` (exact sum over the 2^l hidden states),
scipy.integrate.quad over x of the explicit sum over h written in numpy, closed forms, and the
spread of the estimates over independent seeded runs (the bias of log Z and the reported
standard error).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from steinebm.evaluation.ais import _base_log_z, _log_f_beta, ais, ais_log_partition
from steinebm.evaluation.likelihood import log_likelihood
from steinebm.models.energies import GaussianBernoulliRBM


def random_rbm(d: int, l: int, seed: int, scale_B: float = 0.5) -> GaussianBernoulliRBM:
    """B ~ N(0, scale_B^2), b ~ N(0, 1), c ~ N(0, 0.5^2)."""
    rng = np.random.default_rng(seed)
    rbm = GaussianBernoulliRBM(d, l)
    with torch.no_grad():
        rbm.B.copy_(torch.tensor(rng.normal(0.0, scale_B, size=(d, l))))
        rbm.b.copy_(torch.tensor(rng.normal(0.0, 1.0, size=d)))
        rbm.c.copy_(torch.tensor(rng.normal(0.0, 0.5, size=l)))
    return rbm


def params(rbm: GaussianBernoulliRBM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return rbm.B.detach().double(), rbm.b.detach().double(), rbm.c.detach().double()


def joint_sum_numpy(x: float, B: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float) -> float:
    """sum over h in {-1, +1}^l of exp(beta (x B h + c^T h) + b x - x^2 / 2), for one visible."""
    total = 0.0
    for h in itertools.product((-1.0, 1.0), repeat=len(c)):
        hv = np.array(h)
        total += math.exp(beta * (x * float(B[0] @ hv) + float(c @ hv)) + float(b[0]) * x - 0.5 * x * x)
    return total


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- the annealing path


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_path_normaliser_by_quadrature(beta):
    """1 visible, 2 hidden: ∫ sum_h p*_β(x, h) dx by quad; at β = 0 the closed-form base log Z_0,
    at β = 1 the RBM's exact log Z, and for every β the same integral of exp(log p*_β(x))."""
    B = np.array([[1.3, -0.8]])
    b = np.array([0.7])
    c = np.array([0.4, -0.9])
    rbm = GaussianBernoulliRBM(1, 2).double()
    with torch.no_grad():
        rbm.B.copy_(torch.tensor(B))
        rbm.b.copy_(torch.tensor(b))
        rbm.c.copy_(torch.tensor(c))
    Bt, bt, ct = params(rbm)
    joint, _ = integrate.quad(lambda x: joint_sum_numpy(x, B, b, c, beta), -np.inf, np.inf, epsabs=0, epsrel=1e-12)
    marginal, _ = integrate.quad(
        lambda x: math.exp(float(_log_f_beta(torch.tensor([[x]], dtype=torch.float64), Bt, bt, ct, beta))),
        -np.inf,
        np.inf,
        epsabs=0,
        epsrel=1e-12,
    )
    assert math.log(marginal) == pytest.approx(math.log(joint), abs=1e-9)
    if beta == 0.0:
        # (d/2) log 2π + 1/2 ||b||^2 + l log 2
        assert _base_log_z(bt, 2) == pytest.approx(math.log(joint), abs=1e-9)
        assert _base_log_z(bt, 2) == pytest.approx(
            0.5 * math.log(2 * math.pi) + 0.5 * 0.49 + 2 * math.log(2), abs=1e-12
        )
    if beta == 1.0:
        assert float(rbm.log_partition()) == pytest.approx(math.log(joint), abs=1e-9)


def test_log_f_beta_is_the_h_sum_of_the_joint_and_the_rbm_marginal_at_one():
    """log p*_β(x) = log sum_h exp(β (x^T B h + c^T h) + b^T x - ||x||^2 / 2) by enumeration, and
    at β = 1 it is the RBM's own f(x): the annealed joint has the RBM's convention."""
    rbm = random_rbm(4, 5, seed=3, scale_B=1.0)
    B, b, c = params(rbm)
    x = torch.randn(7, 4, generator=gen(0), dtype=torch.float64) * 2
    H = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=5)), dtype=torch.float64)  # 32 5
    for beta in (0.0, 0.3, 1.0):
        joint = beta * (x @ B @ H.T + (H @ c)) + (x @ b - 0.5 * (x * x).sum(1)).unsqueeze(1)  # 7 32
        torch.testing.assert_close(_log_f_beta(x, B, b, c, beta), torch.logsumexp(joint, 1), rtol=0, atol=1e-10)
    torch.testing.assert_close(_log_f_beta(x, B, b, c, 1.0), rbm(x.float()).double(), rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- AIS for the RBM


@pytest.mark.parametrize(
    ("d", "l", "seed", "init"),
    [(5, 10, 0, False), (12, 12, 1, False), (20, 16, 2, False), (8, 20, 3, False), (16, 12, 4, True)],
)
def test_rbm_log_z_matches_enumeration(d, l, seed, init):
    """AIS log Z within 3 standard errors and 0.1 nats of the exact sum over the 2^l states.
    ``init``: the class's own initialisation (B uniform in +-4 sqrt(6 / (d + l)), strong: every
    ||B_k||^2 ≈ 18 here, 31 in the MNIST model), else B ~ N(0, 0.5^2) and random biases."""
    rbm = GaussianBernoulliRBM(d, l, generator=gen(seed)) if init else random_rbm(d, l, seed)
    exact = float(rbm.log_partition())
    # with chains frozen in their modes at large β, more chains cut the error more than more steps
    res = ais_log_partition(rbm, n_chains=6000 if init else 2000, n_betas=1000, generator=gen(100 + seed))
    assert 0 < res.stderr < 0.033
    assert abs(res.log_z - exact) < 3 * res.stderr
    assert abs(res.log_z - exact) < 0.1


@pytest.mark.parametrize("schedule", [[0.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.3, 0.3, 0.7, 1.0]])
def test_short_chains_are_unbiased_in_z(schedule):
    """E[exp(w)] = Z for any schedule, even one jump (plain importance sampling from the base) and
    one with a repeated temperature; with 2+ steps this also checks that the Gibbs sweep leaves each
    p_β invariant (a wrong sweep biases the mean). Tolerance: 4 standard errors of the mean."""
    B = torch.tensor([[1.2, -0.7]], dtype=torch.float64)
    rbm = GaussianBernoulliRBM(1, 2)
    with torch.no_grad():
        rbm.B.copy_(B)
        rbm.b.fill_(0.5)
        rbm.c.copy_(torch.tensor([0.3, -0.6]))
    res = ais_log_partition(rbm, n_chains=100_000, n_betas=torch.tensor(schedule), generator=gen(7))
    z_hat = torch.exp(res.log_weights - float(rbm.log_partition()))  # estimates of Z / Z_exact
    se = float(z_hat.std()) / math.sqrt(z_hat.numel())
    assert se < 0.02
    assert abs(float(z_hat.mean()) - 1.0) < 4 * se
    assert res.n_betas == len(schedule) - 1


def _independent_runs(rbm: GaussianBernoulliRBM, n_chains: int, n_betas: int, runs: int) -> tuple[np.ndarray, ...]:
    """The errors log Z_hat - log Z (exact log Z by enumeration) and the reported standard errors of
    ``runs`` independent AIS runs, seeded 0, 1, ..."""
    exact = float(rbm.log_partition())
    res = [ais_log_partition(rbm, n_chains=n_chains, n_betas=n_betas, generator=gen(r)) for r in range(runs)]
    return np.array([r.log_z - exact for r in res]), np.array([r.stderr for r in res])


def test_log_z_is_biased_low_by_half_its_variance():
    """E[Z_hat] = Z makes E[log Z_hat] <= log Z (Jensen), and to second order in the error
    E[log Z_hat] - log Z = -Var(log Z_hat) / 2. Over 2,000 runs of 20 chains and 5 steps (a spread
    of about 0.4 nats each) the mean error lies more than 5 of its standard errors below 0 (it
    was 9 when written), and the mean of err + (err - mean err)^2 / 2, whose expectation the
    second-order rule says is 0, within 4 of its own standard errors of 0 (0.3 when written).
    These weights are heavy-tailed, and there the reported standard error underestimates the
    spread, as AISResult says: by more than 5 standard errors of the spread (0.86 of it, z = -8.6,
    when written)."""
    err, se = _independent_runs(random_rbm(3, 4, seed=0, scale_B=1.0), n_chains=20, n_betas=5, runs=2000)
    n = len(err)
    bias, sem = err.mean(), err.std(ddof=1) / math.sqrt(n)
    assert bias < -5 * sem
    q = err + (err - bias) ** 2 / 2
    assert abs(q.mean()) < 4 * q.std(ddof=1) / math.sqrt(n), (bias, err.var(ddof=1) / 2)
    sd = err.std(ddof=1)
    sd_se = ((err - bias) ** 2).std(ddof=1) / math.sqrt(n) / (2 * sd)  # delta method on the variance
    assert math.sqrt((se**2).mean()) < sd - 5 * sd_se


def test_reported_standard_error_matches_the_spread_over_seeds():
    """With light-tailed weights (a weakly coupled RBM, 100 chains, 3 steps) the reported standard
    error is the spread of log Z_hat over independent runs: over 2,000 runs, the root mean square
    of the reported errors equals the standard deviation of the estimates within 5 standard
    errors of that deviation (each about 1.6 % of it; the two differed by 0.7 % when written)."""
    err, se = _independent_runs(random_rbm(3, 4, seed=0, scale_B=0.5), n_chains=100, n_betas=3, runs=2000)
    n = len(err)
    sd = err.std(ddof=1)
    sd_se = ((err - err.mean()) ** 2).std(ddof=1) / math.sqrt(n) / (2 * sd)  # delta method on the variance
    assert sd_se < 0.03 * sd
    assert abs(math.sqrt((se**2).mean()) - sd) < 5 * sd_se, (math.sqrt((se**2).mean()), sd, sd_se)


def test_deterministic_given_the_seed():
    rbm = random_rbm(6, 8, seed=5)
    a = ais_log_partition(rbm, n_chains=20, n_betas=50, generator=gen(11))
    b = ais_log_partition(rbm, n_chains=20, n_betas=50, generator=gen(11))
    c = ais_log_partition(rbm, n_chains=20, n_betas=50, generator=gen(12))
    assert torch.equal(a.log_weights, b.log_weights) and a.log_z == b.log_z
    assert a.log_z != c.log_z


def test_result_fields_and_float32_model():
    rbm = random_rbm(6, 8, seed=5).float()
    res = ais_log_partition(rbm, n_chains=30, n_betas=40, generator=gen(0))
    assert res.n_chains == 30 and res.n_betas == 40
    assert res.log_weights.shape == (30,) and res.log_weights.dtype == torch.float64
    assert res.log_z == pytest.approx(float(torch.logsumexp(res.log_weights, 0)) - math.log(30), abs=1e-12)
    r = torch.exp(res.log_weights - res.log_weights.max())
    assert res.stderr == pytest.approx(float(r.std() / (math.sqrt(30) * r.mean())), rel=1e-12)
    one = ais_log_partition(rbm, n_chains=1, n_betas=5, generator=gen(0))
    assert math.isnan(one.stderr) and math.isfinite(one.log_z)


def test_progress_bar(capsys):
    ais_log_partition(random_rbm(3, 4, seed=0), n_chains=5, n_betas=20, generator=gen(0), progress=True)
    assert "AIS" in capsys.readouterr().err


def test_log_likelihood_matches_exact():
    """Mean f(x) - log Z with AIS log Z vs the exact log-likelihood; image-shaped input."""
    rbm = random_rbm(6, 10, seed=9)
    x = torch.randn(50, 1, 2, 3, generator=gen(1))
    exact = log_likelihood(rbm, x.reshape(50, 6), "exact").value
    est = log_likelihood(rbm, x, "ais", ais_chains=200, ais_steps=500, generator=gen(2))
    ll, se = est.value, est.stderr
    assert 0 < se < 0.05
    assert abs(ll - exact) < max(3 * se, 0.02)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_chains": 0}, "n_chains"),
        ({"n_chains": -3}, "n_chains"),
        ({"n_chains": 2.5}, "n_chains"),
        ({"n_betas": 0}, "n_betas"),
        ({"n_betas": [0.1, 1.0]}, "start at 0 and end at 1"),
        ({"n_betas": [0.0, 0.9]}, "start at 0 and end at 1"),
        ({"n_betas": [0.0, 0.6, 0.4, 1.0]}, "non-decreasing"),
        ({"n_betas": [0.0]}, "at least 2"),
        ({"n_betas": [[0.0, 1.0]]}, "1-D"),
        ({"n_betas": [0.0, float("nan"), 1.0]}, "finite"),
    ],
)
def test_bad_arguments(kwargs, match):
    rbm = random_rbm(3, 4, seed=0)
    with pytest.raises(ValueError, match=match):
        ais_log_partition(rbm, **kwargs)
    gauss = (lambda x: -0.5 * x**2, lambda x: -0.5 * x**2, lambda n, g: torch.randn(n, generator=g), lambda x, b, g: x)
    with pytest.raises(ValueError, match=match):
        ais(*gauss, **kwargs)
    with pytest.raises(ValueError, match="at least one"):
        log_likelihood(rbm, torch.zeros(0, 3), "ais")


# --------------------------------------------------------------------------- the generic geometric path

MU, SIGMA, KAPPA = 2.0, 0.5, 1.7  # f_1(x) = exp(KAPPA - (x - MU)^2 / (2 SIGMA^2))
LOG_Z1 = KAPPA + 0.5 * math.log(2 * math.pi * SIGMA**2)


def _log_f0(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * x**2


def _log_f1(x: torch.Tensor) -> torch.Tensor:
    return KAPPA - 0.5 * (x - MU) ** 2 / SIGMA**2


def _base(n: int, g: torch.Generator | None) -> torch.Tensor:
    return torch.randn(n, generator=g, dtype=torch.float64)


def _exact_move(x: torch.Tensor, beta: float, g: torch.Generator | None) -> torch.Tensor:
    """A fresh draw from f_β, Gaussian with precision (1 - β) + β / σ² and mean β μ / σ² / precision."""
    prec = (1 - beta) + beta / SIGMA**2
    return beta * MU / SIGMA**2 / prec + torch.randn(x.shape, generator=g, dtype=x.dtype) / math.sqrt(prec)


def _metropolis(x: torch.Tensor, beta: float, g: torch.Generator | None) -> torch.Tensor:
    """Three random-walk Metropolis steps on f_β = (1 - β) log f_0 + β log f_1."""

    def log_f(y: torch.Tensor) -> torch.Tensor:
        return (1 - beta) * _log_f0(y) + beta * _log_f1(y)

    for _ in range(3):
        y = x + 0.8 * torch.randn(x.shape, generator=g, dtype=x.dtype)
        u = torch.rand(x.shape, generator=g, dtype=x.dtype)
        x = torch.where(torch.log(u) < log_f(y) - log_f(x), y, x)
    return x


@pytest.mark.parametrize("move", [_exact_move, _metropolis])
def test_generic_ais_gaussian_to_gaussian(move):
    res = ais(
        _log_f0,
        _log_f1,
        _base,
        move,
        log_z0=0.5 * math.log(2 * math.pi),
        n_chains=1000,
        n_betas=100,
        generator=gen(3),
    )
    assert 0 < res.stderr < 0.02
    assert abs(res.log_z - LOG_Z1) < max(3 * res.stderr, 0.01)


def test_generic_ais_one_jump_is_importance_sampling():
    """K = 1: the weights are exactly log f_1 - log f_0 at base draws, plus log Z_0."""
    g = gen(4)
    res = ais(_log_f0, _log_f1, _base, _exact_move, log_z0=0.25, n_chains=10, n_betas=1, generator=g)
    x = _base(10, gen(4))
    torch.testing.assert_close(res.log_weights, _log_f1(x) - _log_f0(x) + 0.25)


def test_generic_ais_on_the_rbm_joint_state():
    """The generic path on the RBM's joint state s = (x, h) with a block-Gibbs move: base
    exp(b^T x - ||x||^2 / 2) on R^d x {-1, +1}^l, target exp(x^T B h + c^T h + ...). No analytic
    h-sum here, so this checks the specialised estimator's path and its Z_0 independently."""
    rbm = random_rbm(4, 6, seed=8)
    B, b, c = params(rbm)
    d, l = B.shape

    def split(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return s[:, :d], s[:, d:]

    def log_f0(s: torch.Tensor) -> torch.Tensor:
        x, _ = split(s)
        return x @ b - 0.5 * (x * x).sum(1)

    def log_f1(s: torch.Tensor) -> torch.Tensor:
        x, h = split(s)
        return log_f0(s) + ((x @ B) * h).sum(1) + h @ c

    def base(n: int, g: torch.Generator | None) -> torch.Tensor:
        x = b + torch.randn(n, d, generator=g, dtype=torch.float64)
        h = torch.randint(0, 2, (n, l), generator=g).double() * 2 - 1
        return torch.cat([x, h], 1)

    def gibbs(s: torch.Tensor, beta: float, g: torch.Generator | None) -> torch.Tensor:
        x, _ = split(s)
        p = torch.sigmoid(2 * beta * (x @ B + c))
        h = (torch.rand(p.shape, generator=g, dtype=p.dtype) < p).double() * 2 - 1
        x = b + beta * h @ B.T + torch.randn(x.shape, generator=g, dtype=x.dtype)
        return torch.cat([x, h], 1)

    res = ais(log_f0, log_f1, base, gibbs, log_z0=_base_log_z(b, l), n_chains=500, n_betas=400, generator=gen(5))
    exact = float(rbm.log_partition())
    assert 0 < res.stderr < 0.05
    assert abs(res.log_z - exact) < max(3 * res.stderr, 0.05)


# --- where the library uses AIS: evaluate, and the training loop beyond enumeration --------------------


def test_log_likelihood_auto_is_exact_for_few_hidden_units_and_ais_agrees_within_its_error():
    torch.manual_seed(0)
    rbm = GaussianBernoulliRBM(8, 10, generator=torch.Generator().manual_seed(1))
    x = torch.randn(50, 8)
    exact = log_likelihood(rbm, x)
    assert exact.method == "exact" and exact.stderr == 0.0
    assert exact.value == pytest.approx(float(rbm.log_prob(x, rbm.log_partition()).mean()), abs=1e-12)
    est = log_likelihood(rbm, x, "ais", ais_chains=2000, ais_steps=500, generator=torch.Generator().manual_seed(0))
    assert est.method == "ais" and est.stderr > 0
    assert abs(est.value - exact.value) < 3 * est.stderr + 1e-3
    assert est.log_partition == pytest.approx(float(rbm.log_partition()), abs=3 * est.stderr + 1e-3)
    with pytest.raises(ValueError, match="method"):
        log_likelihood(rbm, x, "guess")


def test_cli_evaluate_and_training_use_ais_beyond_enumeration(tmp_path, capsys):
    import json

    from steinebm.cli import main
    from steinebm.engine.runlog import read_metrics
    from steinebm.evaluation.likelihood import EXACT_MAX_HIDDEN

    run = tmp_path / "big"
    n_hidden = EXACT_MAX_HIDDEN + 6  # 2^30 states: enumeration is not an option
    args = ["train", "dataset=mnist-embedded", "n_train=200", "batch_size=50", f"n_hidden={n_hidden}"]
    assert main([*args, "epochs=1", "progress=false", f"out_dir={run}"]) == 0
    last = [r for r in read_metrics(run) if "test_ll" in r][-1]
    assert last["ll_method"] == "ais" and math.isfinite(last["test_ll"]) and last["ll_stderr"] > 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--ais-steps", "2000", "--seed", "1"]) == 0  # the loop's budget, another seed
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "ais" and out["stderr"] > 0 and math.isfinite(out["log_likelihood_nats"])
    # two independent AIS runs of the same budget agree within a few combined standard errors
    assert abs(out["log_likelihood_nats"] - last["test_ll"]) < 5 * math.hypot(out["stderr"], last["ll_stderr"]) + 0.5
    assert main(["evaluate", str(run), "--ais-chains", "0"]) == 2
