"""Kernels and bandwidth rules against independent computations.

References used here never call the code under test: bandwidths come from hand-computed
distances or from ``scipy.spatial.distance.pdist`` + ``numpy.median``; Gram matrices and
repulsive terms come from a direct double loop that differentiates ``k(x_j, x_i)`` in
``x_j`` with ``torch.autograd`` pair by pair.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist, squareform
from torch import nn

from steinebm.core.kernels import IMQ, RBF, ConstantKernel, FeatureKernel, median_bandwidth, pairwise_sq_dists
from steinebm.core.svgd import svgd_direction

DT = torch.float64


# ----------------------------------------------------------------------------- references


def ref_median_h(x: np.ndarray, median_over: str = "pairs", log_term: str = "m") -> float:
    """h = med^2 / log(m) (or log(m+1)) with numpy's median of the Euclidean distances."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    m = len(x)
    dist = pdist(x)  # i < j
    if median_over == "all":
        dist = squareform(dist).ravel()  # m^2 entries, zero diagonal included
    med = np.median(dist)
    denom = math.log(m) if log_term == "m" else math.log(m + 1)
    return med**2 / denom


def loop_K_R(kfun, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K[j, i] = k(x_j, x_i) and R[i] = sum_j grad_{x_j} k(x_j, x_i), one pair at a time."""
    m = x.shape[0]
    K = torch.zeros(m, m, dtype=x.dtype)
    R = torch.zeros_like(x)
    for i in range(m):
        xi = x[i].detach().clone()
        for j in range(m):
            xj = x[j].detach().clone().requires_grad_(True)
            k = kfun(xj, xi)
            (g,) = torch.autograd.grad(k, xj, allow_unused=True)
            K[j, i] = k.detach()
            if g is not None:
                R[i] += g
    return K, R


def rbf_fun(h: float):
    return lambda a, b: torch.exp(-((a - b) ** 2).sum() / h)


def imq_fun(h: float, c: float, beta: float):
    return lambda a, b: (c**2 + ((a - b) ** 2).sum() / h) ** beta


def const_fun(a, b):
    return 1.0 + 0.0 * (a.sum() + b.sum())


def feature_fun(features, H: float):
    def k(a, b):
        ea = features(a.unsqueeze(0)).reshape(-1)
        eb = features(b.unsqueeze(0)).reshape(-1)
        return torch.exp(-((ea - eb) ** 2).sum() / H)

    return k


def rand_x(m: int, *shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, *shape, generator=g, dtype=DT)


# ----------------------------------------------------------------------------- median rule

# 1-D points 0, 1, 3, 7. Pairwise distances (i < j): 1, 3, 7, 2, 6, 4 -> sorted 1 2 3 4 6 7,
# median (even count) = (3 + 4) / 2 = 3.5. All m^2 = 16 entries: four zeros and each distance
# twice: 0 0 0 0 1 1 2 2 | 3 3 4 4 6 6 7 7 -> median = (2 + 3) / 2 = 2.5.
# 1-D points 0, 1, 2, 4, 8: distances 1 2 4 8 1 3 7 2 6 4 -> sorted 1 1 2 2 3 4 4 6 7 8,
# median (3 + 4) / 2 = 3.5; all 25 entries: five zeros, 1 x4, 2 x4, 3 x2, ... -> 13th value = 2.
# 1-D points 0..4: distances 1 x4, 2 x3, 3 x2, 4 x1 -> 1 1 1 1 2 2 2 3 3 4: a tie in the
# middle, median = 2.
# 2-D points (0,0), (3,4), (6,0): distances 5, 6, 5 -> median 5 (odd count).
# 2-D points (0,0), (1,0), (0,2): distances 1, 2, sqrt 5 -> median 2; all 9 entries:
# 0 0 0 1 1 2 2 sqrt5 sqrt5 -> 5th value = 1.
HAND_CASES = [
    ([[0.0], [1.0], [3.0], [7.0]], 3.5, 2.5),
    ([[0.0], [1.0], [2.0], [4.0], [8.0]], 3.5, 2.0),
    ([[0.0], [1.0], [2.0], [3.0], [4.0]], 2.0, 1.0),  # all: 5 zeros, 1 x8 -> 13th = 1
    ([[0.0, 0.0], [3.0, 4.0], [6.0, 0.0]], 5.0, 5.0),
    ([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], 2.0, 1.0),
]


@pytest.mark.parametrize("points, med_pairs, med_all", HAND_CASES)
def test_median_rule_hand_computed(points, med_pairs, med_all):
    x = torch.tensor(points, dtype=DT)
    m = x.shape[0]
    d2 = pairwise_sq_dists(x)
    assert float(median_bandwidth(d2)) == pytest.approx(med_pairs**2 / math.log(m), rel=1e-12)
    assert float(median_bandwidth(d2, "pairs", "m+1")) == pytest.approx(med_pairs**2 / math.log(m + 1), rel=1e-12)
    assert float(median_bandwidth(d2, "all", "m")) == pytest.approx(med_all**2 / math.log(m), rel=1e-12)
    assert float(median_bandwidth(d2, "all", "m+1")) == pytest.approx(med_all**2 / math.log(m + 1), rel=1e-12)
    # the hand numbers agree with numpy's convention too
    assert ref_median_h(points) == pytest.approx(med_pairs**2 / math.log(m), rel=1e-12)
    assert ref_median_h(points, "all") == pytest.approx(med_all**2 / math.log(m), rel=1e-12)


def test_rbf_uses_the_median_rule_hand_computed():
    # points 0, 1, 3, 7: h = 3.5^2 / log 4, so k(0, 1) = exp(-1 / h)
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=DT)
    for kw, h in [
        ({}, 3.5**2 / math.log(4)),
        ({"log_term": "m+1"}, 3.5**2 / math.log(5)),
        ({"median_over": "all"}, 2.5**2 / math.log(4)),
    ]:
        k = RBF(**kw)
        K, _ = k.gram_and_repulsion(x)
        assert k.last_h == pytest.approx(h, rel=1e-12)
        assert float(K[0, 1]) == pytest.approx(math.exp(-1.0 / h), rel=1e-12)
        assert float(K[0, 3]) == pytest.approx(math.exp(-49.0 / h), rel=1e-12)


@pytest.mark.parametrize("m", [2, 3, 4, 5, 6, 7, 8, 9])
@pytest.mark.parametrize("median_over", ["pairs", "all"])
@pytest.mark.parametrize("log_term", ["m", "m+1"])
def test_median_rule_matches_scipy_random(m, median_over, log_term):
    # m(m-1)/2 is odd for m = 2, 3, 6, 7 and even for m = 4, 5, 8, 9
    x = rand_x(m, 3, seed=m)
    h = median_bandwidth(pairwise_sq_dists(x), median_over, log_term)
    assert float(h) == pytest.approx(ref_median_h(x.numpy(), median_over, log_term), rel=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_median_rule_with_ties_matches_scipy(seed):
    # integer points on a tiny grid: many equal distances, also at the middle of the order
    rng = np.random.default_rng(seed)
    m = int(rng.integers(4, 12))
    pts = rng.integers(0, 3, size=(m, 2)).astype(np.float64)
    x = torch.tensor(pts)
    for over in ("pairs", "all"):
        h = median_bandwidth(pairwise_sq_dists(x), over)
        ref = ref_median_h(pts, over)
        if ref == 0.0:
            assert float(h) == pytest.approx(1e-12)  # the documented floor
        else:
            assert float(h) == pytest.approx(ref, rel=1e-10)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=2, max_size=12))
def test_median_rule_property_1d_integers(vals):
    pts = np.array(vals, dtype=np.float64)[:, None]
    x = torch.tensor(pts)
    for over in ("pairs", "all"):
        ref = ref_median_h(pts, over)
        h = float(median_bandwidth(pairwise_sq_dists(x), over))
        assert h == pytest.approx(max(ref, 1e-12), rel=1e-10, abs=1e-15)


def test_feature_median_rule_scale_and_power():
    # h = 0.5 * med / log m (power 1): points 0, 1, 3, 7 have med = 3.5
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=DT)
    h = median_bandwidth(pairwise_sq_dists(x), scale=0.5, power=1)
    assert float(h) == pytest.approx(0.5 * 3.5 / math.log(4), rel=1e-12)


def test_single_particle_bandwidth_is_one():
    x = torch.tensor([[0.3, -2.0, 5.0]], dtype=DT)
    assert float(median_bandwidth(pairwise_sq_dists(x))) == 1.0
    k = RBF()
    K, R = k.gram_and_repulsion(x)
    assert k.last_h == 1.0
    assert torch.allclose(K, torch.ones(1, 1, dtype=DT))
    assert torch.all(R == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", [RBF(), RBF(median_over="all"), IMQ(bandwidth="median"), RBF(bandwidth=2.0)])
def test_identical_particles_are_finite(dtype, kernel):
    g = torch.Generator().manual_seed(1)
    for scale in (0.0, 0.1, 1.0, 10.0):
        x = (scale * torch.randn(1, 20, generator=g, dtype=dtype)).repeat(5, 1)
        K, R = kernel.gram_and_repulsion(x)
        assert torch.isfinite(K).all() and torch.isfinite(R).all()
        s = torch.randn(5, 20, generator=g, dtype=dtype)
        for norm in ("m", "kernel_sum"):
            assert torch.isfinite(svgd_direction(x, s, kernel, norm)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_particles_give_unit_gram_and_no_repulsion(dtype):
    # every x_j - x_i is exactly 0, so k(x_j, x_i) = 1 and grad_{x_j} k = 0 for any h > 0,
    # and phi is the mean score (the m-particle MAP reduction)
    g = torch.Generator().manual_seed(1)
    for scale in (0.1, 1.0, 10.0, 100.0):
        x = (scale * torch.randn(1, 50, generator=g, dtype=dtype)).repeat(5, 1)
        s = torch.randn(5, 50, generator=g, dtype=dtype)
        K, R = RBF().gram_and_repulsion(x)
        assert torch.allclose(K, torch.ones_like(K), atol=1e-3), (scale, K)
        assert R.abs().max() < 1e-3, (scale, R.abs().max())
        phi = svgd_direction(x, s, RBF())
        assert torch.allclose(phi, s.mean(0).expand_as(s), atol=1e-3), (scale, (phi - s.mean(0)).abs().max())


def test_pairwise_sq_dists_against_scipy():
    x = rand_x(7, 4, seed=3)
    d2 = pairwise_sq_dists(x).numpy()
    assert np.allclose(d2, squareform(pdist(x.numpy(), "sqeuclidean")), atol=1e-12)


# ----------------------------------------------------------------------------- K and R


def kernel_cases(x: torch.Tensor):
    """(name, kernel, reference k function) with the bandwidth computed independently."""
    h_med = ref_median_h(x.numpy())
    h_med_all = ref_median_h(x.numpy(), "all", "m+1")
    return [
        ("rbf-fixed", RBF(bandwidth=1.7), rbf_fun(1.7)),
        ("rbf-median", RBF(), rbf_fun(h_med)),
        ("rbf-median-all-m+1", RBF(median_over="all", log_term="m+1"), rbf_fun(h_med_all)),
        ("imq-fixed", IMQ(c=1.3, beta=-0.7, bandwidth=0.8), imq_fun(0.8, 1.3, -0.7)),
        ("imq-median", IMQ(c=1.0, beta=-0.5, bandwidth="median"), imq_fun(h_med, 1.0, -0.5)),
        ("constant", ConstantKernel(), const_fun),
    ]


@pytest.mark.parametrize("shape", [(6, 3), (5, 1), (5, 1, 2, 3)])
def test_gram_and_repulsion_against_double_loop(shape):
    x = rand_x(*shape, seed=sum(shape))
    for name, kernel, kfun in kernel_cases(x):
        K, R = kernel.gram_and_repulsion(x)
        K_ref, R_ref = loop_K_R(kfun, x)
        assert R.shape == x.shape, name
        assert torch.allclose(K, K_ref, rtol=1e-10, atol=1e-12), name
        assert torch.allclose(R, R_ref, rtol=1e-9, atol=1e-11), name


def test_repulsion_is_not_trivially_zero():
    # guard for the comparisons above: the reference R really is nonzero for non-constant kernels
    x = rand_x(6, 3, seed=9)
    for name, _, kfun in kernel_cases(x):
        _, R_ref = loop_K_R(kfun, x)
        if name != "constant":
            assert R_ref.abs().max() > 1e-3, name


def test_kernel_call_against_loop():
    x, y = rand_x(4, 3, seed=1), rand_x(3, 3, seed=2)
    for kernel, kfun in [
        (RBF(bandwidth=1.7), rbf_fun(1.7)),
        (IMQ(c=1.3, beta=-0.7, bandwidth=0.8), imq_fun(0.8, 1.3, -0.7)),
        (ConstantKernel(), const_fun),
    ]:
        ref = torch.tensor([[float(kfun(a, b)) for b in y] for a in x], dtype=DT)
        assert torch.allclose(kernel(x, y).to(DT), ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bandwidth", [1.3, "median"])
@pytest.mark.parametrize("shape", [(6, 2), (5, 1, 2, 3)])
def test_rbf_stein_sum_against_loop(bandwidth, shape):
    x = rand_x(*shape, seed=4)
    s = rand_x(*shape, seed=5)
    m = x.shape[0]
    h = bandwidth if bandwidth != "median" else ref_median_h(x.numpy())
    kfun = rbf_fun(h)
    xf, sf = x.reshape(m, -1), s.reshape(m, -1)
    S_ref = torch.zeros_like(xf)
    ksum_ref = torch.zeros(m, dtype=DT)
    for i in range(m):
        for j in range(m):
            xj = xf[j].clone().requires_grad_(True)
            k = kfun(xj, xf[i])
            (g,) = torch.autograd.grad(k, xj)
            S_ref[i] += k.detach() * sf[j] + g
            ksum_ref[i] += k.detach()
    S, ksum = RBF(bandwidth=bandwidth).stein_sum(x, s)
    assert torch.allclose(S.reshape(m, -1), S_ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(ksum, ksum_ref, rtol=1e-12)
    # the generic (base class) route agrees too, for a kernel without a fused override
    S2, ksum2 = IMQ(bandwidth=0.9).stein_sum(x, s)
    K, R = loop_K_R(imq_fun(0.9, 1.0, -0.5), x)
    S2_ref = torch.stack([sum(K[j, i] * sf[j] for j in range(m)) for i in range(m)]) + R.reshape(m, -1)
    assert torch.allclose(S2.reshape(m, -1), S2_ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(ksum2, K.sum(0), rtol=1e-12)


@pytest.mark.parametrize("spread, score_scale", [(1.0, 1.0), (1e-3, 1e-3)])
def test_rbf_stein_sum_float32_on_both_product_forms(spread, score_scale):
    """float32 against a float64 double loop: a wide cloud takes the single-product form
    K (s - 2/h x) + 2/h x rowsum(K); a cloud 1e-3 wide, 5 away from the origin, with small
    scores, makes 2/h |x| dwarf |s| and takes the two-product form. Both stay accurate."""
    g = torch.Generator().manual_seed(7)
    # the float32 inputs, exactly, in float64: the reference then differs only in the arithmetic
    x64 = (5.0 + spread * torch.randn(40, 30, generator=g, dtype=DT)).float().double()
    s64 = (score_scale * torch.randn(40, 30, generator=g, dtype=DT)).float().double()
    h = ref_median_h(x64.numpy())
    K = torch.exp(-(torch.cdist(x64, x64) ** 2) / h)
    # S_i = sum_j K_ji s_j + sum_j grad_{x_j} K_ji, grad_{x_j} K_ji = -2/h (x_j - x_i) K_ji
    S_ref = K.T @ s64 - (2.0 / h) * (K.T @ x64 - x64 * K.sum(0, keepdim=True).T)
    S, _ = RBF().stein_sum(x64.float(), s64.float())
    err = (S.double() - S_ref).abs().max() / S_ref.abs().max()
    assert float(err) < 1e-4


# ----------------------------------------------------------------------------- feature kernel


def make_mlp(d_in: int, flatten: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    layers += [nn.Linear(d_in, 5), nn.Tanh(), nn.Linear(5, 3)]
    return nn.Sequential(*layers).double()


def ref_feature_H(features, x: torch.Tensor) -> float:
    with torch.no_grad():
        e = features(x).reshape(x.shape[0], -1).numpy()
    med = np.median(pdist(e))
    return (0.5 * med / math.log(len(e))) ** 2


@pytest.mark.parametrize("chunk", [2, 16])
@pytest.mark.parametrize("bandwidth", [0.7, "median"])
def test_feature_kernel_against_loop(chunk, bandwidth):
    x = rand_x(5, 3, seed=7)
    feats = make_mlp(3)
    H = bandwidth if bandwidth != "median" else ref_feature_H(feats, x)
    kernel = FeatureKernel(feats, bandwidth=bandwidth, chunk=chunk)
    K, R = kernel.gram_and_repulsion(x)
    K_ref, R_ref = loop_K_R(feature_fun(feats, H), x)
    assert kernel.last_h == pytest.approx(H, rel=1e-10)
    assert torch.allclose(K, K_ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(R, R_ref, rtol=1e-9, atol=1e-11)
    assert R_ref.abs().max() > 1e-3


def test_feature_kernel_nonlinear_function_and_images():
    # a parameter-free nonlinear feature map on image-shaped particles
    def feats(x):
        flat = x.reshape(x.shape[0], -1)
        return torch.cat([torch.sin(flat), flat**2 / 3.0], 1)

    x = rand_x(6, 1, 2, 3, seed=8)
    for bandwidth in (2.5, "median"):
        H = bandwidth if bandwidth != "median" else ref_feature_H(feats, x)
        K, R = FeatureKernel(feats, bandwidth=bandwidth, chunk=4).gram_and_repulsion(x)
        K_ref, R_ref = loop_K_R(feature_fun(feats, H), x)
        assert R.shape == x.shape
        assert torch.allclose(K, K_ref, rtol=1e-10, atol=1e-12)
        assert torch.allclose(R, R_ref, rtol=1e-9, atol=1e-11)


def test_feature_kernel_mlp_on_images():
    x = rand_x(5, 1, 2, 3, seed=10)
    feats = make_mlp(6, flatten=True)
    H = ref_feature_H(feats, x)
    K, R = FeatureKernel(feats).gram_and_repulsion(x)
    K_ref, R_ref = loop_K_R(feature_fun(feats, H), x)
    assert torch.allclose(K, K_ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(R, R_ref, rtol=1e-9, atol=1e-11)


def test_feature_kernel_median_rule_hand_computed():
    # identity features on 0, 1, 3, 7: med = 3.5, H = (0.5 * 3.5 / log 4)^2
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=DT)
    k = FeatureKernel(lambda t: t)
    K, _ = k.gram_and_repulsion(x)
    H = (0.5 * 3.5 / math.log(4)) ** 2
    assert k.last_h == pytest.approx(H, rel=1e-12)
    assert float(K[1, 2]) == pytest.approx(math.exp(-4.0 / H), rel=1e-12)


@pytest.mark.parametrize("bandwidth", [0.9, "median"])
def test_feature_kernel_nearest_repulsion_keeps_the_nearest_term(bandwidth):
    """repulsion="nearest": R_i is the single term j = nn(i) of the exact sum, nn(i) found by a
    loop over plain feature distances, the term by autograd on that one pair."""
    x = rand_x(7, 1, 2, 3, seed=12)
    feats = make_mlp(6, flatten=True)
    H = bandwidth if bandwidth != "median" else ref_feature_H(feats, x)
    K, R = FeatureKernel(feats, bandwidth=bandwidth, repulsion="nearest").gram_and_repulsion(x)
    kfun = feature_fun(feats, H)
    with torch.no_grad():
        e = feats(x).reshape(7, -1)
    for i in range(7):
        dists = [float(((e[j] - e[i]) ** 2).sum()) if j != i else math.inf for j in range(7)]
        j = int(np.argmin(dists))
        xj = x[j].detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(kfun(xj, x[i].detach()), xj)
        assert torch.allclose(R[i], g, rtol=1e-9, atol=1e-12), i
    K_ref, R_exact = loop_K_R(kfun, x)
    assert torch.allclose(K, K_ref, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(R, R_exact, rtol=1e-3)  # an approximation: the other terms are gone
    with pytest.raises(ValueError, match="repulsion"):
        FeatureKernel(feats, repulsion="all")


def test_feature_kernel_identity_features_equals_rbf():
    x = rand_x(6, 3, seed=11)
    K1, R1 = FeatureKernel(lambda t: t, bandwidth=1.9).gram_and_repulsion(x)
    K2, R2 = loop_K_R(rbf_fun(1.9), x)
    assert torch.allclose(K1, K2, rtol=1e-12) and torch.allclose(R1, R2, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- arguments


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        RBF(bandwidth="mean")
    with pytest.raises(ValueError):
        RBF(bandwidth=-1.0)
    with pytest.raises(ValueError):
        RBF(median_over="diag")
    with pytest.raises(ValueError):
        RBF(log_term="m+2")
    with pytest.raises(ValueError):
        IMQ(beta=0.5)
    with pytest.raises(ValueError):
        IMQ(c=0.0)
    with pytest.raises(ValueError):
        median_bandwidth(torch.ones(3, 3), median_over="x")


@pytest.mark.parametrize("rows", [slice(0, 2), slice(2, 4), slice(4, 6)])
def test_stein_sum_rows_against_loop(rows):
    """The rows of S that one of several processes computes (all m particles j, the bandwidth of
    all m^2 distances) equal the double loop's rows, for the fused RBF, the generic route and the
    feature kernel's row-wise vector-Jacobian products."""
    x, s = rand_x(6, 3, seed=12), rand_x(6, 3, seed=13)
    m = x.shape[0]
    feats = make_mlp(3)
    cases = [
        (RBF(), rbf_fun(ref_median_h(x.numpy()))),
        (RBF(bandwidth=1.3), rbf_fun(1.3)),
        (IMQ(bandwidth=0.9), imq_fun(0.9, 1.0, -0.5)),
        (FeatureKernel(feats, chunk=1), feature_fun(feats, ref_feature_H(feats, x))),
    ]
    for kernel, kfun in cases:
        K, R = loop_K_R(kfun, x)
        S_ref = torch.stack([sum(K[j, i] * s[j] for j in range(m)) + R[i] for i in range(m)])
        S, ksum = kernel.stein_sum(x, s, rows)
        name = type(kernel).__name__
        assert S.shape == (2, 3), name
        assert torch.allclose(S, S_ref[rows], rtol=1e-9, atol=1e-11), name
        assert torch.allclose(ksum, K.sum(0)[rows], rtol=1e-12), name
