"""The authors' log Z estimator (Hamiltonian AIS in x-space, Wu et al. 2017) against closed forms
and exact enumeration written out here by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from steinebm.cli import main
from steinebm.evaluation.ais import hais_log_partition, sigmoid_schedule
from steinebm.models.energies import GaussianBernoulliRBM


def _log_z_by_hand(B: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Z = sum_h (2 pi)^(d/2) exp(||b + B h||^2 / 2 + c.h), h in {-1, 1}^l: a loop over h."""
    d, n_hid = B.shape
    terms = []
    for h in itertools.product((-1.0, 1.0), repeat=n_hid):
        h = np.array(h)
        mean = b + B @ h
        terms.append(0.5 * d * math.log(2 * math.pi) + 0.5 * float(mean @ mean) + float(c @ h))
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _rbm(d: int, n_hid: int, scale: float, seed: int) -> GaussianBernoulliRBM:
    g = torch.Generator().manual_seed(seed)
    rbm = GaussianBernoulliRBM(d, n_hid, generator=g).double()
    with torch.no_grad():
        rbm.B.copy_(torch.randn(d, n_hid, generator=g, dtype=torch.float64) * scale)
        rbm.b.copy_(torch.rand(d, generator=g, dtype=torch.float64))
        rbm.c.copy_(torch.randn(n_hid, generator=g, dtype=torch.float64) * 0.5)
    return rbm


def test_sigmoid_schedule_is_their_formula():
    t = np.linspace(-4, 4, 7)
    s = 1 / (1 + np.exp(-t))
    np.testing.assert_allclose(sigmoid_schedule(7), (s - s.min()) / (s.max() - s.min()), rtol=0, atol=1e-15)
    assert sigmoid_schedule(1000)[0] == 0.0 and sigmoid_schedule(1000)[-1] == 1.0


def test_gaussian_target_closed_form():
    """B = 0: the target is N(b, I) times 2^l exp(sum c-terms); every f_t is Gaussian."""
    rbm = _rbm(6, 3, 0.0, 0)
    b, c = rbm.b.detach().numpy(), rbm.c.detach().numpy()
    exact = 3 * math.log(2 * math.pi) + 0.5 * float(b @ b) + sum(math.log(2 * math.cosh(v)) for v in c)
    res = hais_log_partition(rbm, 5, 100, 300, generator=torch.Generator().manual_seed(0))
    assert abs(res.log_z_pooled - exact) < 4 * res.stderr + 1e-3


@pytest.mark.parametrize("seed", [1, 2])
def test_small_rbm_against_enumeration(seed):
    rbm = _rbm(5, 4, 0.7, seed)
    exact = _log_z_by_hand(*(p.detach().numpy() for p in (rbm.B, rbm.b, rbm.c)))
    assert exact == pytest.approx(float(rbm.log_partition()), abs=1e-9)  # the two exact routes agree
    res = hais_log_partition(rbm, 10, 100, 1000, generator=torch.Generator().manual_seed(seed))
    # unbiased in Z: 10 groups' spread bounds the error of their mean
    assert abs(res.log_z_pooled - exact) < 4 * res.stderr + 0.02
    # Jensen, deterministic: the mean of the groups' log-mean-exp is at most the pooled one
    assert res.log_z <= res.log_z_pooled + 1e-12
    assert 0.5 < res.accept_rate <= 1.0


def test_mnist_sized_rbm_is_not_overstated_beyond_markovs_bound():
    """d = 784, l = 10 (exact log Z by enumeration): by Markov's inequality an unbiased Z-hat
    exceeds 1000 Z with probability <= 0.001, so log Z-hat <= log Z + log 1000 (fixed seed)."""
    g = torch.Generator().manual_seed(3)
    rbm = GaussianBernoulliRBM(784, 10, generator=g).double()
    with torch.no_grad():
        rbm.B.mul_(0.05)
        rbm.b.copy_(torch.rand(784, generator=g, dtype=torch.float64) * 0.3)
    exact = _log_z_by_hand(*(p.detach().numpy() for p in (rbm.B, rbm.b, rbm.c)))
    res = hais_log_partition(rbm, 4, 25, 200, generator=torch.Generator().manual_seed(4))
    assert res.log_z_pooled <= exact + math.log(1000)
    assert res.log_z_pooled > exact - 50  # and it found the bulk of the mass


def test_evaluate_hais_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "r"
    args = ["dataset=mnist-embedded", "n_train=200", "batch_size=50", "n_hidden=3", "progress=false", "max_steps=2"]
    assert main(["train", *args, f"out_dir={run}"]) == 0
    capsys.readouterr()
    argv = ["evaluate", str(run), "--method", "hais", "--ais-steps", "50", "--ais-chains", "10", "--hais-groups", "3"]
    assert main(argv) == 0
    import json

    rec = json.loads(capsys.readouterr().out)
    assert rec["method"] == "hais" and math.isfinite(rec["log_likelihood_nats"]) and rec["stderr"] > 0
    assert main(["evaluate", str(run), "--method", "hais", "--ais-steps", "1"]) == 2


def test_the_verdict_sets_the_estimator_against_the_steingan_rbms_only():
    """Their -771.2 is a SteinGAN RBM's: a SteinCD RBM above it must not make the estimator
    'explain' it (numbers by hand)."""
    from steinebm.reproduction.reproduce_hais import hais_verdict

    def row(method, exact, *estimates):
        return {"method": method, "exact": exact, "hais": {str(k): {"ll": e} for k, e in enumerate(estimates)}}

    gan, cd = row("steingan", -800.0, -799.0, -799.9), row("steincd", -744.0, -743.5)
    v = hais_verdict([gan, cd], -771.2)
    assert v["largest_overstatement"] == pytest.approx(1.0) and v["gap_to_target"] == pytest.approx(28.8)
    assert v["explained"] is False and "does not explain" in v["text"]
    close = row("steingan", -772.0, -771.0)  # overstated by 1.0, gap 0.8
    assert hais_verdict([close], -771.2)["explained"] is True
    assert hais_verdict([cd], -771.2)["explained"] is None  # no SteinGAN RBM to judge
    above = hais_verdict([row("steingan", -760.0, -759.9)], -771.2)
    assert above["explained"] is None and "nothing for the estimator to explain" in above["text"]
