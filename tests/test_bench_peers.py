"""benchmarks/bench_peers.py: the comparisons compare like with like, and its quick run works.

The peers (pyro-ppl, learnergy) come from the optional ``bench`` extra; tests that need one skip,
saying so, where it is not installed. The formula checks need neither.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest
import torch

from steinebm import GaussianBernoulliRBM

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))
import bench_peers  # noqa: E402

MISSING = bench_peers.missing_peers()  # the bench's own test: importable, not merely present
need_pyro = pytest.mark.skipif("pyro-ppl" in MISSING, reason="pyro-ppl not installed (pip install -e .[bench])")
need_learnergy = pytest.mark.skipif("learnergy" in MISSING, reason="learnergy not installed (pip install -e .[bench])")


def random_rbm(d: int, l: int, seed: int = 0) -> GaussianBernoulliRBM:
    g = torch.Generator().manual_seed(seed)
    rbm = GaussianBernoulliRBM(d, l, generator=g)
    with torch.no_grad():
        rbm.b.copy_(torch.randn(d, generator=g))
        rbm.c.copy_(torch.randn(l, generator=g))
    return rbm.requires_grad_(False)


def test_pyro_target_is_our_log_density() -> None:
    """The Pyro model's log joint, N(0, I) prior + rbm_tilt, is f(x) - (d/2) log 2 pi: written with
    logaddexp, against the model's |z| + log1p(e^-2|z|), including where |z| is large."""
    d = 7
    rbm = random_rbm(d, 4).double()
    x = 3.0 * torch.randn(16, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    prior = -0.5 * (x * x).sum(1) - 0.5 * d * math.log(2 * math.pi)
    pyro_side = prior + bench_peers.rbm_tilt(x, rbm.B, rbm.b, rbm.c)
    torch.testing.assert_close(pyro_side, rbm(x) - 0.5 * d * math.log(2 * math.pi), rtol=1e-12, atol=1e-10)


@need_pyro
def test_pyro_model_traces_to_our_log_density() -> None:
    """What Pyro itself scores for the model (all sites of the trace) is f(x) - (d/2) log 2 pi per particle."""
    import pyro
    from pyro import poutine

    m, d = 9, 5
    rbm = random_rbm(d, 3)
    x = torch.randn(m, d, generator=torch.Generator().manual_seed(2))
    with pyro.plate("particles", m):
        trace = poutine.trace(poutine.condition(bench_peers.pyro_rbm_model(rbm), data={"x": x})).get_trace()
    trace.compute_log_prob()
    log_joint = sum(site["log_prob"] for site in trace.nodes.values() if site["type"] == "sample")
    torch.testing.assert_close(log_joint, rbm(x) - 0.5 * d * math.log(2 * math.pi), rtol=1e-5, atol=1e-4)


@need_pyro
def test_one_svgd_step_matches_pyro_at_a_fixed_bandwidth() -> None:
    """Pyro's multivariate RBF with every coordinate's bandwidth h is our RBF(h): one SGD step of
    each from the same particles moves them alike (and by far more than the gap)."""
    rbm = random_rbm(6, 3)
    x0 = torch.randn(12, 6, generator=torch.Generator().manual_seed(3))
    gap, size = bench_peers.one_step_gap(rbm, x0, bandwidth=3.0, lr=0.1)
    assert gap < 1e-5
    assert size > 1e-2


@need_pyro
def test_pyro_bandwidth_rule_is_as_stated() -> None:
    """The notes' claim: one bandwidth per coordinate, median_{i<j} (x_ik - x_jk)^2 / log(m + 1)."""
    m, d = 8, 3
    x = torch.randn(m, d, generator=torch.Generator().manual_seed(4))
    iu = torch.triu_indices(m, m, offset=1)
    sq = (x[iu[0]] - x[iu[1]]).pow(2)  # 28 pairs x d: an even count, the lower middle value
    expected = sq.sort(0).values[(sq.shape[0] - 1) // 2] / math.log(m + 1)
    torch.testing.assert_close(bench_peers.pyro_bandwidths(x), expected)


@need_learnergy
def test_learnergy_gaussian_rbm_is_our_model_reparametrised() -> None:
    """The CD comparison trains one family of marginals: ours with hidden units +-1, theirs 0/1.
    With W = 2B, hidden bias 2c, visible bias b - B 1, their -energy(x) - f(x) is one constant."""
    d, l = 8, 3
    rbm = random_rbm(d, l).double()
    from learnergy.models.gaussian import GaussianRBM

    theirs = GaussianRBM(n_visible=d, n_hidden=l).double()
    with torch.no_grad():
        theirs.W.copy_(2 * rbm.B)
        theirs.b.copy_(2 * rbm.c)
        theirs.a.copy_(rbm.b - rbm.B.sum(1))
    x = 2.0 * torch.randn(20, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    diff = (-theirs.energy(x) - rbm(x)).detach()
    torch.testing.assert_close(diff, diff[0].expand_as(diff), rtol=0, atol=1e-9)


def test_missing_peer_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench_peers, "missing_peers", lambda: ["pyro-ppl"])
    assert bench_peers.main(["--quick"]) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "pip install -e .[bench]" in out


@need_pyro
@need_learnergy
def test_quick_run_on_tiny_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.perf_counter()
    rc = bench_peers.main(["--quick", "--svgd-shapes", "16x12,24x4", "--images", "600", "--rounds", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert time.perf_counter() - t0 < 10
    for row in ("Pyro step / steinebm step, m=16 d=12", "learnergy fit / steinebm", "learnergy bare steps"):
        assert row in out
    assert "max |update gap|" in out and "what differs" in out
