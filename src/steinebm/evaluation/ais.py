"""Annealed importance sampling (AIS) for log partition functions.

AIS (Neal, 2001) estimates ``Z_1 = ∫ f_1`` from a base ``f_0`` whose normaliser ``Z_0`` is known,
through intermediate densities ``f_{β_0}, ..., f_{β_K}`` with ``0 = β_0 <= ... <= β_K = 1``. Each
chain starts with ``x_0 ~ f_0 / Z_0`` and, for k = 1..K, adds

    w += log f_{β_k}(x_{k-1}) - log f_{β_{k-1}}(x_{k-1}),   then   x_k ~ T_k(x_{k-1}, .)

where ``T_k`` leaves ``f_{β_k}`` invariant. Then ``E[exp(w)] = Z_1 / Z_0`` exactly, whatever K and
however slowly ``T_k`` mixes (Neal 2001, Sec. 3); only the variance depends on them. With n chains,
``log Z_1 ≈ log Z_0 + log mean_i exp(w_i)``. This estimate of ``log Z`` is biased low by Jensen's
inequality, by about ``stderr² / 2`` when the weights are well behaved.

Two entry points:

* :func:`ais` for any base / target pair on the geometric path
  ``log f_β = (1 - β) log f_0 + β log f_1`` with a user-given transition;
* :func:`ais_log_partition` for :class:`~steinebm.GaussianBernoulliRBM`, following Salakhutdinov &
  Murray (2008): the path anneals the joint ``p_β(x, h)`` (not the marginal), the hidden units are
  summed out exactly in the weights, and the transition is one block-Gibbs sweep at ``β``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steinebm.models.energies.rbm import GaussianBernoulliRBM
from steinebm.precision import float64_device

__all__ = [
    "AISResult",
    "HAISResult",
    "ais",
    "ais_log_partition",
    "hais_log_partition",
    "sigmoid_schedule",
]

Schedule = int | Tensor | Sequence[float]


@dataclass
class AISResult:
    """An AIS estimate.

    ``log_z``: ``log mean exp(log_weights)``, the estimate of log Z.
    ``stderr``: delta-method standard error of ``log_z``,
    ``std(exp(w - max w)) / (sqrt(n) mean(exp(w - max w)))`` (the relative standard error of the
    mean of the weights). It is computed from the same weights, so when the weights are heavy-tailed
    (too few temperatures) it underestimates the true error; NaN for a single chain.
    ``log_weights``: (n_chains,) float64, the log of each chain's unbiased estimate of Z (log Z_0
    included), so ``exp(log_weights).mean()`` estimates Z itself.
    ``n_chains``, ``n_betas``: the number of chains and of annealing steps K (K + 1 temperatures).
    """

    log_z: float
    stderr: float
    log_weights: Tensor
    n_chains: int
    n_betas: int


def _schedule(betas: Schedule, device: Any) -> Tensor:
    """A validated float64 schedule: 1-D, finite, from exactly 0 to exactly 1, non-decreasing."""
    if isinstance(betas, int):
        if isinstance(betas, bool) or betas < 1:
            raise ValueError(f"n_betas must be an integer >= 1 (the number of annealing steps), got {betas!r}")
        return torch.linspace(0.0, 1.0, betas + 1, dtype=torch.float64, device=device)
    s = torch.as_tensor(betas, dtype=torch.float64).detach().to(device)
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"a schedule must be a 1-D sequence of at least 2 temperatures, got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError("a schedule must be finite")
    if float(s[0]) != 0.0 or float(s[-1]) != 1.0:
        raise ValueError(f"a schedule must start at 0 and end at 1, got {float(s[0])} ... {float(s[-1])}")
    if bool((s[1:] < s[:-1]).any()):
        i = int(torch.nonzero(s[1:] < s[:-1])[0])
        raise ValueError(f"a schedule must be non-decreasing, but beta[{i + 1}] = {float(s[i + 1])} < {float(s[i])}")
    return s


def _check_chains(n_chains: int) -> None:
    if isinstance(n_chains, bool) or not isinstance(n_chains, int) or n_chains < 1:
        raise ValueError(f"n_chains must be an integer >= 1, got {n_chains!r}")


def _result(log_w: Tensor, n_betas: int) -> AISResult:
    """log Z = log mean exp(w) and its delta-method standard error (see :class:`AISResult`)."""
    n = log_w.numel()
    log_z = float(torch.logsumexp(log_w, 0) - math.log(n))
    if n < 2:
        stderr = math.nan
    elif not math.isfinite(log_z):
        stderr = math.inf
    else:
        r = torch.exp(log_w - log_w.max())
        stderr = float(r.std() / (math.sqrt(n) * r.mean()))
    return AISResult(log_z=log_z, stderr=stderr, log_weights=log_w, n_chains=n, n_betas=n_betas)


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="AIS", unit="β", file=sys.stderr, dynamic_ncols=True)


@torch.no_grad()
def ais(
    log_f0: Callable[[Tensor], Tensor],
    log_f1: Callable[[Tensor], Tensor],
    sample_base: Callable[[int, torch.Generator | None], Tensor],
    transition: Callable[[Tensor, float, torch.Generator | None], Tensor],
    log_z0: float = 0.0,
    n_chains: int = 100,
    n_betas: Schedule = 1000,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AISResult:
    """AIS estimate of ``log Z_1`` along the geometric path ``log f_β = (1 - β) log f_0 + β log f_1``.

    ``log_f0`` / ``log_f1``: unnormalised log-densities of a batch of states, (n, ...) -> (n,).
    ``sample_base(n, generator)``: n exact draws from ``f_0 / Z_0``; ``log_z0``: ``log Z_0``.
    ``transition(x, beta, generator)``: one MCMC move of every chain leaving ``f_β`` invariant
    (Metropolis, Gibbs, an exact draw...). It need not mix: invariance is all that unbiasedness needs.
    ``n_betas``: the number K of annealing steps (K + 1 equally spaced temperatures) or the
    temperatures themselves, from 0 to 1, non-decreasing. On this path the weight increment
    at step k is ``(β_k - β_{k-1}) (log f_1 - log f_0)(x_{k-1})``; K increments, K - 1 transitions
    (the move at β = 1 would not change the weights). ``f_1`` must be zero wherever ``f_0`` is.

    Example: from N(0, 1) to an unnormalised N(2, 0.5²), sampling each f_β exactly (both Gaussian):

    >>> import math, torch
    >>> def exact(x, beta, g):  # f_beta: precision 1 - beta + 4 beta, mean 8 beta / precision
    ...     prec = 1.0 - beta + 4.0 * beta
    ...     return 8.0 * beta / prec + torch.randn(x.shape, generator=g, dtype=x.dtype) / math.sqrt(prec)
    >>> res = ais(lambda x: -0.5 * x**2, lambda x: -2.0 * (x - 2.0) ** 2,
    ...           lambda n, g: torch.randn(n, generator=g, dtype=torch.float64), exact,
    ...           log_z0=0.5 * math.log(2 * math.pi), n_chains=200, n_betas=50,
    ...           generator=torch.Generator().manual_seed(0))
    >>> abs(res.log_z - 0.5 * math.log(2 * math.pi * 0.25)) < 3 * res.stderr + 1e-3
    True
    """
    _check_chains(n_chains)
    betas = _schedule(n_betas, device="cpu").tolist()
    x = sample_base(n_chains, generator)
    log_w = torch.zeros(n_chains, dtype=torch.float64, device=x.device)
    k_total = len(betas) - 1
    with _bar(k_total, progress) as bar:
        for k in range(1, k_total + 1):
            delta = betas[k] - betas[k - 1]
            if delta != 0.0:
                log_w += delta * (log_f1(x) - log_f0(x)).to(torch.float64)
            if k < k_total:
                x = transition(x, betas[k], generator)
            bar.update(1)
    return _result(log_w + log_z0, k_total)


def _log_2cosh(z: Tensor) -> Tensor:
    """``log(e^z + e^-z)``, stable for large ``|z|``."""
    return torch.logaddexp(z, -z)


def _log_f_beta(x: Tensor, B: Tensor, b: Tensor, c: Tensor, beta: float) -> Tensor:
    """``log p*_β(x) = b^T x - 1/2 ||x||^2 + sum_k log 2cosh(β z_k)``, ``z = B^T x + c``: the joint
    ``exp(β (x^T B h + c^T h) + b^T x - 1/2 ||x||^2)`` summed over ``h in {-1, +1}^l``. At β = 1 it
    is the RBM's ``f(x)``, at β = 0 the base ``N(b, I)`` times ``2^l``."""
    z = torch.addmm(c, x, B)
    return x @ b - 0.5 * (x * x).sum(1) + _log_2cosh(beta * z).sum(1)


def _base_log_z(b: Tensor, n_hidden: int) -> float:
    """``log Z_0 = (d/2) log 2π + 1/2 ||b||^2 + l log 2``, the normaliser of the β = 0 joint
    ``exp(b^T x - 1/2 ||x||^2)`` over ``x in R^d`` and ``h in {-1, +1}^l``. (``b^T x - 1/2 ||x||^2 =
    -1/2 ||x - b||^2 + 1/2 ||b||^2``: the visible bias stays in the base, hence the ``||b||^2`` term.)"""
    d = b.numel()
    return 0.5 * d * math.log(2.0 * math.pi) + 0.5 * float(b.double() @ b.double()) + n_hidden * math.log(2.0)


@torch.no_grad()
def ais_log_partition(
    rbm: GaussianBernoulliRBM,
    n_chains: int = 100,
    n_betas: Schedule = 10_000,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> AISResult:
    """AIS estimate of the RBM's ``log Z`` (Salakhutdinov & Murray, 2008), in float64.

    Path: the joint ``p_β(x, h) ∝ exp(β (x^T B h + c^T h) + b^T x - 1/2 ||x||^2)``, whose x-marginal
    at β = 1 is ``exp(f(x))`` (the sum over h of ``exp(x^T B h + c^T h)`` is
    ``prod_k (e^{z_k} + e^{-z_k})``), and whose base, β = 0, is ``x ~ N(b, I)`` with h uniform, of
    exact ``log Z_0 = (d/2) log 2π + 1/2 ||b||^2 + l log 2``. Annealing only the interaction (not
    the visible bias) keeps the base exact and close to the data scale.

    Weights: h is summed out exactly, ``log p*_β(x) = b^T x - 1/2 ||x||^2 + sum_k log 2cosh(β z_k)``,
    so the increment at step k is ``sum_k [log 2cosh(β_k z) - log 2cosh(β_{k-1} z)]`` at the current
    x (Rao-Blackwellised: lower variance than weighting the joint state). Transition at β_k: one
    block-Gibbs sweep, ``p(h_k = +1 | x) = sigmoid(2 β z_k)`` then ``x | h ~ N(b + β B h, I)``, which
    leaves ``p_β(x, h)`` and so ``p*_β(x)`` invariant.

    ``n_betas``: the number K of annealing steps, with K + 1 equally spaced temperatures, or an
    explicit schedule from 0 to 1, non-decreasing; ``n_betas=1`` is plain importance sampling from
    the base. Why linear and not the Salakhutdinov & Murray schedule for binary RBMs (1/29 of the
    steps in [0, 0.5], 8/29 in [0.5, 0.9], 20/29 in [0.9, 1]): with Gaussian visibles the
    distribution sharpens into its modes, and the Gibbs sweep stops moving between them, around
    β ≈ 0.3-0.7; steps above that only reweight frozen chains. On RBMs with this class's
    initialisation (d = 20, 50, 784; K = 2,000, 100 chains) the linear schedule gave 2-3x smaller
    standard errors and errors than the S&M one, and about the same as β = t^2 or β = sqrt(t).

    Cost: K times two (n_chains x d x l) matmuls and n_chains x d normal draws; the random numbers
    are drawn in blocks of steps to save per-call overhead, and the normals in float32 (4x faster
    on CPU; their rounding, ~1e-7, is far below the Monte Carlo error), then used in float64.
    ``generator`` must live on ``device`` (default: the RBM's).

    >>> import torch
    >>> rbm = GaussianBernoulliRBM(6, 8, generator=torch.Generator().manual_seed(0))
    >>> res = ais_log_partition(rbm, n_chains=100, n_betas=500, generator=torch.Generator().manual_seed(1))
    >>> abs(res.log_z - float(rbm.log_partition())) < max(3 * res.stderr, 0.05)
    True
    """
    _check_chains(n_chains)
    dev = torch.device(device) if device is not None else float64_device(rbm.B.device)
    betas = _schedule(n_betas, device="cpu").tolist()
    k_total = len(betas) - 1
    B = rbm.B.detach().to(device=dev, dtype=torch.float64)
    b = rbm.b.detach().to(device=dev, dtype=torch.float64)
    c = rbm.c.detach().to(device=dev, dtype=torch.float64)
    d, n_hid = B.shape
    opts: dict[str, Any] = {"generator": generator, "device": dev, "dtype": torch.float64}

    x = b + torch.randn(n_chains, d, **opts)  # β = 0: x ~ N(b, I) (h uniform, summed out)
    log_w = torch.full((n_chains,), _base_log_z(b, n_hid), **{k: opts[k] for k in ("device", "dtype")})
    # per step: n_hid uniforms for h, d normals for x; draw them for `block` steps at once
    block = max(1, min(k_total, 2**22 // (n_chains * (d + n_hid))))
    uniforms = normals = torch.empty(0)
    with _bar(k_total, progress) as bar:
        for k in range(1, k_total + 1):
            z = torch.addmm(c, x, B)  # n l, at x_{k-1}
            if betas[k] != betas[k - 1]:
                log_w += (_log_2cosh(betas[k] * z) - _log_2cosh(betas[k - 1] * z)).sum(1)
            if k < k_total:
                j = (k - 1) % block
                if j == 0:
                    m = min(block, k_total - k)
                    uniforms = torch.rand(m, n_chains, n_hid, **opts)
                    normals = torch.randn(m, n_chains, d, generator=generator, device=dev).to(torch.float64).add_(b)
                beta = betas[k]
                h = (uniforms[j] < torch.sigmoid(2.0 * beta * z)).to(torch.float64).mul_(2.0).sub_(1.0)
                x = torch.addmm(normals[j], h, B.T, alpha=beta)  # N(b + β B h, I)
            bar.update(1)
    return _result(log_w, k_total)


def sigmoid_schedule(n_temperatures: int, rad: float = 4.0) -> list[float]:
    """Wu et al. (2017)'s sigmoid schedule of ``n_temperatures`` values from 0 to 1:
    ``γ_t = sigmoid(rad (2t/T - 1))`` on an even grid, rescaled so the ends are exactly 0 and 1.
    It puts more temperatures near both ends, where the distributions change fastest.

    >>> [round(b, 4) for b in sigmoid_schedule(5)]
    [0.0, 0.105, 0.5, 0.895, 1.0]
    """
    if isinstance(n_temperatures, bool) or not isinstance(n_temperatures, int) or n_temperatures < 2:
        raise ValueError(f"n_temperatures must be an integer >= 2, got {n_temperatures!r}")
    t = torch.linspace(-rad, rad, n_temperatures, dtype=torch.float64)
    s = torch.sigmoid(t)
    s = (s - s[0]) / (s[-1] - s[0])
    s[0], s[-1] = 0.0, 1.0
    return s.tolist()


@dataclass
class HAISResult:
    """A Hamiltonian AIS estimate as Wu et al. (2017)'s code reports it.

    ``log_z``: the mean over ``n_experiments`` independent groups of each group's
    ``log mean exp(w)`` over its ``n_chains`` chains: the number their code returns (and the
    authors' rbm_adv.py subtracts). Averaging logs of small groups makes it lower in expectation
    than ``log_z_pooled``, which pools all chains. ``stderr``: the standard error of ``log_z``
    across the groups. ``log_weights``: (n_experiments, n_chains). ``accept_rate``: the mean
    HMC acceptance over the run; ``final_step_size``: the adapted leapfrog step at the end.
    """

    log_z: float
    log_z_pooled: float
    stderr: float
    log_weights: Tensor
    n_temperatures: int
    accept_rate: float
    final_step_size: float


@torch.no_grad()
def hais_log_partition(
    rbm: GaussianBernoulliRBM,
    n_experiments: int = 100,
    n_chains: int = 100,
    n_temperatures: int = 1000,
    leapfrog_steps: int = 1,
    step_size: float = 1e-3,
    target_accept: float = 0.65,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
) -> HAISResult:
    """The estimator the authors' README quotes its -771.2 with: Hamiltonian AIS (Wu et al.,
    2017, mnist/logz/ of their code) for the RBM's ``log Z``, in the visible space.

    Path: ``log f_t(x) = (1 - t) log N(x; 0, I) + t f(x)`` over :func:`sigmoid_schedule`
    (``n_temperatures`` values), from the normalised base N(0, I) (log Z_0 = 0). At each step the
    weight gains ``(t_k - t_{k-1}) (f(x) - log N(x; 0, I))`` at the current state, then every chain
    takes one HMC move at ``t_k``: momentum v ~ N(0, I), ``leapfrog_steps`` drift-kick-drift steps
    (``x += ε/2 v; v += ε ∇ log f_t(x); x += ε/2 v``), a Metropolis test on
    ``-log f_t(x) + |v|^2 / 2``. One step size ε for all chains, adapted after every move as their
    code does: the running acceptance ``a <- 0.9 a + 0.1 mean(accepted)`` (from 0.65); ε times 1.02
    while ``a > target_accept``, else times 0.98, kept in [1e-4, 0.5]. The adaptation depends on
    the past only, so every move still leaves its ``f_t`` invariant and the weights stay valid.

    ``n_experiments`` groups of ``n_chains`` chains: see :class:`HAISResult` for the two numbers
    returned. The defaults are the authors' (100 x 100 chains, 1,000 temperatures, one leapfrog
    step, ε from 0.001); their code ran in float32, ``dtype`` chooses.

    >>> import math, torch
    >>> rbm = GaussianBernoulliRBM(5, 3, generator=torch.Generator().manual_seed(0))
    >>> _ = rbm.B.data.mul_(0.3)  # a few well-separated modes would need far more temperatures
    >>> res = hais_log_partition(rbm, n_experiments=4, n_chains=50, n_temperatures=300,
    ...                          generator=torch.Generator().manual_seed(1))
    >>> abs(res.log_z_pooled - float(rbm.log_partition())) < 4 * res.stderr + 0.02
    True
    """
    for name, count in (("n_experiments", n_experiments), ("n_chains", n_chains), ("leapfrog_steps", leapfrog_steps)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {count!r}")
    if not (step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be positive and finite, got {step_size!r}")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
    temps = sigmoid_schedule(n_temperatures)
    dev = torch.device(device) if device is not None else float64_device(rbm.B.device)
    B, b, c = (p.detach().to(device=dev, dtype=dtype) for p in (rbm.B, rbm.b, rbm.c))
    d = B.shape[0]
    n = n_experiments * n_chains
    half_log_2pi = 0.5 * d * math.log(2.0 * math.pi)

    def f_and_base(x: Tensor) -> tuple[Tensor, Tensor]:
        """The RBM's f(x) and log N(x; 0, I), (n,) each."""
        sq = (x * x).sum(1)
        return x @ b - 0.5 * sq + _log_2cosh(torch.addmm(c, x, B)).sum(1), -0.5 * sq - half_log_2pi

    def grad_log_f(x: Tensor, t: float) -> Tensor:
        """∇ log f_t = (1 - t)(-x) + t (b - x + B tanh(B^T x + c)) = -x + t (b + B tanh(.))."""
        return torch.addmm(b, torch.tanh(torch.addmm(c, x, B)), B.T).mul_(t).sub_(x)

    x = torch.randn(n, d, generator=generator, device=dev, dtype=dtype)
    f, base = f_and_base(x)
    log_w = torch.zeros(n, dtype=torch.float64, device=dev)
    eps, avg_accept, accepted_total = float(step_size), float(target_accept), 0.0
    with _bar(len(temps) - 1, progress) as bar:
        for t0, t1 in zip(temps[:-1], temps[1:]):
            log_w += ((t1 - t0) * (f - base)).to(torch.float64)
            # one HMC move at t1
            v = torch.randn(n, d, generator=generator, device=dev, dtype=dtype)
            h_prev = -((1.0 - t1) * base + t1 * f) + 0.5 * (v * v).sum(1)
            y = x.clone()
            for _ in range(leapfrog_steps):
                y.add_(v, alpha=0.5 * eps)
                v = v + eps * grad_log_f(y, t1)
                y.add_(v, alpha=0.5 * eps)
            f_new, base_new = f_and_base(y)
            h_next = -((1.0 - t1) * base_new + t1 * f_new) + 0.5 * (v * v).sum(1)
            u = torch.rand(n, generator=generator, device=dev, dtype=dtype)
            accept = (torch.exp(h_prev - h_next) - u) >= 0  # their test, as written
            x = torch.where(accept.unsqueeze(1), y, x)
            f, base = torch.where(accept, f_new, f), torch.where(accept, base_new, base)
            rate = float(accept.to(torch.float64).mean())  # one host read per temperature
            accepted_total += rate
            # the new ε from the running rate before this move, both updated together
            eps = min(max(eps * (1.02 if avg_accept > target_accept else 0.98), 1e-4), 0.5)
            avg_accept = 0.9 * avg_accept + 0.1 * rate
            bar.update(1)
    groups = log_w.view(n_experiments, n_chains)
    per = torch.logsumexp(groups, 1) - math.log(n_chains)
    stderr = float(per.std() / math.sqrt(n_experiments)) if n_experiments > 1 else math.nan
    return HAISResult(
        log_z=float(per.mean()),
        log_z_pooled=float(torch.logsumexp(log_w, 0) - math.log(n)),
        stderr=stderr,
        log_weights=groups,
        n_temperatures=len(temps),
        accept_rate=accepted_total / (len(temps) - 1),
        final_step_size=eps,
    )
