"""The image energies of Section 5.2 (autoencoder energy, Eq. 24; joint image-label energy,
Eq. 25) and the DCGAN-style networks for 32 and 64 px images.

Expected values come from numpy on hand-set weights, from arithmetic on layer sizes, or from
autograd on a formula written out here, never from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from steinebm.core.kernels import FeatureKernel
from steinebm.engine.config import Config
from steinebm.errors import ConfigError
from steinebm.learners.steingan import SteinGAN
from steinebm.models.common import count_parameters
from steinebm.models.dcgan_nets import (
    ConditionalDCGANGenerator,
    DCGANDecoder,
    DCGANDiscriminator,
    DCGANEncoder,
    DCGANGenerator,
)
from steinebm.models.energies import AutoencoderEnergy, JointAutoencoderEnergy, score
from steinebm.models.table1 import table1_parameter_counts


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _linear(w: list[list[float]], b: list[float] | None = None) -> nn.Linear:
    wt = torch.tensor(w, dtype=torch.float64)
    lin = nn.Linear(wt.shape[1], wt.shape[0], bias=b is not None).double()
    with torch.no_grad():
        lin.weight.copy_(wt)
        if b is not None:
            lin.bias.copy_(torch.tensor(b, dtype=torch.float64))
    return lin


def _log_softmax_np(logits: np.ndarray) -> np.ndarray:
    mx = logits.max(1, keepdims=True)
    return logits - mx - np.log(np.exp(logits - mx).sum(1, keepdims=True))


# --------------------------------------------------------------- 1. autoencoder energy (Eq. 24)


def test_autoencoder_energy_is_minus_the_norm_of_the_residual():
    W1 = [[0.5, -1.0, 0.0, 2.0], [1.0, 0.25, -0.5, 0.0]]  # E: R^4 -> R^2
    W2 = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, 2.0]]  # D: R^2 -> R^4
    b2 = [0.1, -0.2, 0.3, 0.0]
    energy = AutoencoderEnergy(_linear(W1), _linear(W2, b2))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    rec = x @ np.array(W1).T @ np.array(W2).T + np.array(b2)
    expected = -np.sqrt(((x - rec) ** 2).sum(1))
    got = energy(torch.tensor(x))
    assert got.shape == (5,)
    np.testing.assert_allclose(_np(got), expected, rtol=1e-12)
    np.testing.assert_allclose(_np(energy.encode(torch.tensor(x))), x @ np.array(W1).T, rtol=1e-12)


def test_autoencoder_energy_is_the_norm_not_its_square():
    # D(E(x)) = 0, so f(x) = -||x||: -5 for (3, 4) (the squared norm would give -25)
    energy = AutoencoderEnergy(_linear([[0.0, 0.0]]), _linear([[0.0], [0.0]]))
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    f = energy(x)
    assert f.tolist() == [-5.0, 0.0]
    (g,) = torch.autograd.grad(f.sum(), x)
    # grad_x -||x|| = -x / ||x||; 0 at a zero residual (no NaN)
    np.testing.assert_allclose(_np(g), [[-0.6, -0.8], [0.0, 0.0]], atol=1e-15)


@pytest.mark.parametrize("size", [32, 64])
def test_dcgan_autoencoder_energy_on_images_and_flat_rows(size):
    energy = AutoencoderEnergy.dcgan(size, channels=3, code_dim=6, width=4, generator=torch.Generator().manual_seed(1))
    energy.eval()  # BatchNorm on running statistics: each sample on its own
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        rec = energy.decoder(energy.encoder(x))
        f_img, f_flat = energy(x), energy(x.reshape(3, -1))
    expected = -np.sqrt(((_np(x) - _np(rec)) ** 2).reshape(3, -1).sum(1))
    np.testing.assert_allclose(_np(f_img), expected, rtol=1e-5)
    np.testing.assert_allclose(_np(f_flat), expected, rtol=1e-5)
    assert energy.encode(x.reshape(3, -1)).shape == (3, 6)


# ------------------------------------------------------------- 2. joint energy (Eq. 25), margin


def _joint(margin: float = 1.0) -> JointAutoencoderEnergy:
    """E = identity on R^2, D = 0 (so ||x - D(E(x))|| = ||x||), head h(z) = A z + c."""
    joint = JointAutoencoderEnergy(
        _linear([[1.0, 0.0], [0.0, 1.0]]), _linear([[0.0, 0.0], [0.0, 0.0]]), n_classes=3, margin=margin, code_dim=2
    ).double()
    with torch.no_grad():
        joint.head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 1.0]]))
        joint.head.bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    return joint


_A = np.array([[2.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
_C = np.array([0.5, 0.0, -0.5])
_X = np.array([[2.0, 0.5], [-1.0, 3.0]])


def _ce_np(x: np.ndarray) -> np.ndarray:
    """-log softmax(A x + c) for every class, (n, 3)."""
    return -_log_softmax_np(x @ _A.T + _C)


def test_joint_energy_hinge_on_hand_computed_logits():
    ce = _ce_np(_X)
    # x_0 = (2, 0.5): logits (4.5, 0.5, -2) -> class 0 has CE 0.0198 < 1, class 1 has CE 4.02 > 1
    assert ce[0, 0] < 1.0 < ce[0, 1]
    norm = np.sqrt((_X**2).sum(1))
    for margin in (1.0, 0.0, 5.0):
        joint = _joint(margin)
        for y in range(3):
            yy = torch.full((2,), y)
            got = _np(joint(torch.tensor(_X), yy))
            expected = -norm - np.maximum(margin, ce[:, y])
            np.testing.assert_allclose(got, expected, rtol=1e-12)
            # one-hot labels give the same
            onehot = torch.nn.functional.one_hot(yy, 3).double()
            np.testing.assert_allclose(_np(joint(torch.tensor(_X), onehot)), expected, rtol=1e-12)
    # the paper's default, m = 1, with the two regimes side by side
    f = _joint()(torch.tensor(_X[:1]).repeat(2, 1), torch.tensor([0, 1]))
    np.testing.assert_allclose(_np(f), [-norm[0] - 1.0, -norm[0] - ce[0, 1]], rtol=1e-12)


def test_joint_energy_gradient_is_zero_below_the_margin():
    joint = _joint()
    x = torch.tensor(_X[:1], requires_grad=True)
    # below the margin (y = 0): the label term is the constant m
    f = joint(x, torch.tensor([0]))
    f.backward()
    assert joint.head.weight.grad is not None and joint.head.bias.grad is not None
    assert float(joint.head.weight.grad.abs().max()) == 0.0
    assert float(joint.head.bias.grad.abs().max()) == 0.0
    np.testing.assert_allclose(_np(x.grad), -_X[:1] / np.linalg.norm(_X[0]), rtol=1e-12)  # only -||x||
    # above the margin (y = 1): d(-CE)/dA = -(softmax - onehot) z^T, d(-CE)/dc = -(softmax - onehot)
    joint.zero_grad()
    joint(torch.tensor(_X[:1]), torch.tensor([1])).backward()
    p = np.exp(-_ce_np(_X[:1]))[0]
    e = p - np.eye(3)[1]
    np.testing.assert_allclose(_np(joint.head.weight.grad), -np.outer(e, _X[0]), rtol=1e-10)
    np.testing.assert_allclose(_np(joint.head.bias.grad), -e, rtol=1e-10)


def test_joint_classification_and_marginal():
    joint = _joint()
    x = torch.tensor(_X)
    ce = _ce_np(_X)
    hinged = -np.maximum(1.0, ce)  # n 3
    post = np.exp(hinged) / np.exp(hinged).sum(1, keepdims=True)  # p(y | x) of Eq. 25
    with torch.no_grad():
        np.testing.assert_allclose(np.exp(_np(joint.log_prob_y(x))), post, rtol=1e-12)
        np.testing.assert_allclose(_np(joint.classifier_log_probs(x)), -ce, rtol=1e-12)
        assert joint.predict(x).tolist() == np.argmax(_X @ _A.T + _C, 1).tolist()
        norm = np.sqrt((_X**2).sum(1))
        marg = -norm + np.log(np.exp(hinged).sum(1))
        np.testing.assert_allclose(_np(joint.marginal(x)), marg, rtol=1e-12)


def test_given_binds_the_labels_for_one_argument_code():
    joint = JointAutoencoderEnergy.dcgan(32, channels=1, n_classes=4, code_dim=5, width=4)
    joint.eval()
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([2, 0, 3])
    bound = joint.given(y)
    assert torch.equal(bound(x), joint(x, y))
    assert sum(1 for _ in bound.parameters()) == sum(1 for _ in joint.parameters())  # shared, not copied
    g = score(bound, x)
    xr = x.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(joint(xr, y).sum(), xr)
    assert g.shape == x.shape and torch.allclose(g, g_ref)
    with pytest.raises(ValueError):
        joint(x, y[:2])


# ------------------------------------------------------------------------- 3. nets: shapes, range


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_net_has_the_right_shapes(size, channels):
    m = 2
    x = torch.rand(m, channels, size, size)
    enc = DCGANEncoder(size, channels, code_dim=7, width=4)
    dec = DCGANDecoder(size, channels, code_dim=7, width=4)
    assert enc(x).shape == (m, 7)
    assert enc(x.reshape(m, -1)).shape == (m, 7)
    assert dec(torch.randn(m, 7)).shape == (m, channels, size, size)
    assert enc.image_shape == (channels, size, size)
    ae = AutoencoderEnergy(enc, dec)
    assert ae(x).shape == (m,) and ae(x.reshape(m, -1)).shape == (m,)
    joint = JointAutoencoderEnergy(enc, dec, n_classes=10)
    assert joint(x, torch.tensor([0, 9])).shape == (m,)
    assert joint.log_prob_y(x).shape == (m, 10)
    G = DCGANGenerator(size, channels, noise_dim=12, ngf=4)
    assert G.noise_dim == 12 and G.sample_noise(m).shape == (m, 12)
    assert G(G.sample_noise(m)).shape == (m, channels, size, size)
    Gc = ConditionalDCGANGenerator(size, channels, n_classes=10, noise_dim=12, ngf=4)
    xi, y = Gc.sample_noise(m)
    assert xi.shape == (m, 12) and y.shape == (m,) and y.dtype == torch.int64
    assert Gc(xi, y).shape == (m, channels, size, size)
    D = DCGANDiscriminator(size, channels, ndf=4)
    assert D(x).shape == (m,) and D(x.reshape(m, -1)).shape == (m,)


def test_unsupported_image_size_is_refused():
    with pytest.raises(ValueError):
        DCGANEncoder(28, 1)
    with pytest.raises(ValueError):
        DCGANGenerator(48, 3)


@pytest.mark.parametrize("size", [32, 64])
def test_generators_output_images_in_unit_interval(size):
    rng = torch.Generator().manual_seed(3)
    G = DCGANGenerator(size, 3, ngf=4, generator=rng)
    Gc = ConditionalDCGANGenerator(size, 3, n_classes=10, ngf=4, generator=rng)
    for mode in ("train", "eval"):
        G.train(mode == "train")
        Gc.train(mode == "train")
        with torch.no_grad():
            xi = G.sample_noise(16, rng)
            assert float(xi.min()) >= -1.0 and float(xi.max()) <= 1.0
            for img in (G(xi), G(50.0 * xi), Gc(*Gc.sample_noise(16, rng))):
                assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0


def test_conditional_generator_labels():
    G = ConditionalDCGANGenerator(32, 1, n_classes=3, noise_dim=4, ngf=4, class_counts=[0, 3, 1])
    y = G.sample_labels(4000, torch.Generator().manual_seed(0))
    counts = np.bincount(y.numpy(), minlength=3)
    assert counts[0] == 0
    assert abs(counts[1] / 4000 - 0.75) < 0.03  # 4 sd of a binomial proportion
    # reproducible from the torch.Generator's seed
    a = G.sample_noise(5, torch.Generator().manual_seed(7))
    b = G.sample_noise(5, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # the label is an input: with xi fixed, changing y changes the image; one-hot == integer labels
    G.eval()
    xi = torch.zeros(2, 4)
    with torch.no_grad():
        out = G(xi, torch.tensor([0, 2]))
        assert not torch.allclose(out[0], out[1])
        assert torch.allclose(out, G(xi, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])))
    with pytest.raises(ValueError):
        G.set_class_counts([1.0, 2.0])


# -------------------------------------------------------------- 4. parameter counts (Table 1)


def _conv(cin: int, cout: int, k: int = 5, bias: bool = False, bn: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0) + (2 * cout if bn else 0)


def test_parameter_counts_against_table1():
    # DCGAN discriminator by hand, ndf = 128, 5x5 kernels, channels 3 -> 128 -> 256 -> 512 -> 1024
    body = _conv(3, 128, bias=True, bn=False) + _conv(128, 256) + _conv(256, 512) + _conv(512, 1024)
    d64, d32 = body + 1024 * 4 * 4 + 1, body + 1024 * 2 * 2 + 1
    with torch.device("meta"):  # counts only: no memory, no init
        nets = {
            "d32": DCGANDiscriminator(32, 3),
            "d64": DCGANDiscriminator(64, 3),
            "ae32": AutoencoderEnergy.dcgan(32, 3),
            "ae64": AutoencoderEnergy.dcgan(64, 3),
            "joint32": JointAutoencoderEnergy.dcgan(32, 3, n_classes=10),
            "joint64": JointAutoencoderEnergy.dcgan(64, 3, n_classes=10),
            "ae64_gray": AutoencoderEnergy.dcgan(64, 1),
            "d64_gray": DCGANDiscriminator(64, 1),
        }
    n = {k: count_parameters(v) for k, v in nets.items()}
    assert n["d32"] == d32 and n["d64"] == d64
    assert 16_000_000 < d32 < d64 < 18_000_000  # Table 1: DCGAN "~17m" at both sizes
    # the energies have no more parameters than the discriminator they replace
    for s in ("32", "64"):
        assert n[f"ae{s}"] <= n[f"d{s}"] and n[f"joint{s}"] <= n[f"d{s}"]
    assert n["ae64_gray"] <= n["d64_gray"]
    # the joint energy adds only the linear head (100 -> 10) to the autoencoder
    assert n["joint32"] - n["ae32"] == 100 * 10 + 10
    # the paper's sizes: ~10m on CIFAR-10, ~2.5m on CelebA/LSUN (within 25 %)
    assert 7_500_000 < n["joint32"] < 12_500_000
    assert 1_900_000 < n["ae64"] < 3_200_000
    table = table1_parameter_counts()
    assert table["cifar10"]["energy"] == n["joint32"] and table["celeba_lsun"]["energy"] == n["ae64"]
    assert table["cifar10"]["dcgan_discriminator"] == d32 and table["celeba_lsun"]["dcgan_discriminator"] == d64


# ---------------------------------------------------------------------------- 5. initialisation


def test_init_is_normal_002_and_seeded():
    rng = torch.Generator().manual_seed(11)
    state = torch.random.get_rng_state()
    nets = [
        DCGANEncoder(32, 3, code_dim=20, width=16, generator=rng),
        DCGANDecoder(32, 3, code_dim=20, width=16, generator=rng),
        DCGANGenerator(32, 3, ngf=16, generator=rng),
        DCGANDiscriminator(32, 3, ndf=16, generator=rng),
    ]
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is untouched
    n_big = 0
    for net in nets:
        for mod in net.modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                w = mod.weight.detach().double()
                if w.numel() >= 20_000:  # relative sd of the sd estimate <= 1/sqrt(2n) = 0.5 %
                    n_big += 1
                    assert abs(float(w.std()) - 0.02) < 0.02 * 0.03
                    assert abs(float(w.mean())) < 5 * 0.02 / math.sqrt(w.numel())
                if mod.bias is not None:
                    assert float(mod.bias.detach().abs().max()) == 0.0
            elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                g = mod.weight.detach().double()
                assert abs(float(g.mean()) - 1.0) < 5 * 0.02 / math.sqrt(g.numel())
                assert float(mod.bias.detach().abs().max()) == 0.0
    assert n_big >= 6
    # the same seed gives the same weights, another seed others
    a = DCGANGenerator(32, 1, ngf=4, generator=torch.Generator().manual_seed(5))
    b = DCGANGenerator(32, 1, ngf=4, generator=torch.Generator().manual_seed(5))
    c = DCGANGenerator(32, 1, ngf=4, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


# --------------------------------------------------------- 6. the feature kernel on the codes


def test_feature_kernel_on_autoencoder_codes():
    energy = AutoencoderEnergy.dcgan(32, 3, code_dim=16, width=8, generator=torch.Generator().manual_seed(0))
    energy.eval()  # the kernel needs each sample's code on its own (see FeatureKernel)
    m = 8
    x = torch.rand(m, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    kernel = FeatureKernel(energy.encode)
    K, R = kernel.gram_and_repulsion(x)
    assert K.shape == (m, m) and R.shape == x.shape
    assert bool(torch.isfinite(K).all()) and bool(torch.isfinite(R).all())
    # Section 5.2's bandwidth by hand: H = h^2, h = 0.5 med / log m, med over the pairs i < j
    with torch.no_grad():
        e = _np(energy.encode(x))
    d = np.sqrt(((e[:, None, :] - e[None, :, :]) ** 2).sum(2))
    med = np.median(d[np.triu_indices(m, 1)])
    H = (0.5 * med / math.log(m)) ** 2
    assert kernel.last_h == pytest.approx(H, rel=1e-4)
    np.testing.assert_allclose(_np(K), np.exp(-(d**2) / H), rtol=1e-3, atol=1e-6)
    # R[i] = sum_j grad_{x_j} exp(-||E(x_j) - E(x_i)||^2 / H), E(x_i) held fixed: by autograd
    for i in range(m):
        xr = x.clone().requires_grad_(True)
        ej = energy.encode(xr)
        ei = ej[i].detach()
        (g,) = torch.autograd.grad(torch.exp(-((ej - ei) ** 2).sum(1) / H).sum(), xr)
        torch.testing.assert_close(R[i], g.sum(0), rtol=1e-3, atol=1e-6)


def test_steingan_step_with_joint_energy_and_conditional_generator():
    rng = torch.Generator().manual_seed(0)
    joint = JointAutoencoderEnergy.dcgan(32, 3, n_classes=10, code_dim=8, width=4, generator=rng)
    G = ConditionalDCGANGenerator(32, 3, n_classes=10, noise_dim=8, ngf=4, generator=rng)
    sg = SteinGAN(kernel=FeatureKernel(joint.encode), gamma=0.7)
    m = 4
    xi, y_gen = G.sample_noise(m, rng)
    x_gen = G(xi, y_gen)
    joint.eval()  # the feature kernel on per-sample codes
    g_loss, _ = sg.generator_loss(joint.given(y_gen), x_gen)
    g_loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in G.parameters())
    joint.train()
    x_pos, y_pos = torch.rand(m, 3, 32, 32, generator=rng), torch.randint(0, 10, (m,), generator=rng)
    e_loss, stats = sg.energy_loss(joint.given(y_pos), x_pos, x_gen, steincd=False, energy_gen=joint.given(y_gen))
    e_loss.backward()
    assert joint.head.weight.grad is not None

    def f_by_hand(x: torch.Tensor, y: torch.Tensor) -> float:
        """mean of -||x - D(E(x))|| - max(1, -log softmax(h(E(x)))[y]), the pieces in numpy; one
        pass per batch, as the step scores each batch with its own BatchNorm statistics."""
        with torch.no_grad():
            z = joint.encoder(x)
            rec, logits = _np(joint.decoder(z)).reshape(m, -1), _np(joint.head(z.reshape(m, -1)))
        xs, out = _np(x).reshape(m, -1), []
        for i in range(m):
            lse = logits[i].max() + math.log(np.exp(logits[i] - logits[i].max()).sum())
            out.append(-math.sqrt(((xs[i] - rec[i]) ** 2).sum()) - max(1.0, lse - logits[i, int(y[i])]))
        return float(np.mean(out))

    f_pos, f_neg = f_by_hand(x_pos, y_pos), f_by_hand(x_gen, y_gen)
    assert stats["f_pos"] == pytest.approx(f_pos, rel=1e-5) and stats["f_neg"] == pytest.approx(f_neg, rel=1e-5)
    assert stats["gamma"] == 0.7 and float(e_loss.detach()) == pytest.approx(0.3 * f_neg - f_pos, rel=1e-5)
    # each image is scored with its own label: the real images with the generated labels score otherwise
    assert abs(f_by_hand(x_pos, y_gen) - f_pos) > 1e-3


def test_input_dropout_corrupts_the_encoder_input_not_the_reconstruction_target():
    # E = D = identity: f(x) = -||x - dropout(x)||. For x = 1 in d entries, each dropped entry
    # adds 1 and each kept one (1 - 1/(1-p))^2 = q^2 to the squared norm.
    p, d, m = 0.25, 400, 50
    ae = AutoencoderEnergy(nn.Identity(), nn.Identity(), input_dropout=p)
    x = torch.ones(m, d)
    torch.manual_seed(0)
    sq = ae(x).detach().double() ** 2
    q2 = (p / (1 - p)) ** 2
    dropped = (sq - d * q2) / (1 - q2)
    torch.testing.assert_close(dropped, dropped.round(), atol=1e-3, rtol=0)  # a whole count (float32 norm)
    assert abs(float(dropped.mean()) / d - p) < 0.02  # about p of them (20,000 draws: sd 0.003)
    assert ae.eval()(x).abs().max() == 0  # evaluation is Eq. 24 exactly
    with pytest.raises(ValueError, match="input_dropout"):
        AutoencoderEnergy(nn.Identity(), nn.Identity(), input_dropout=1.0)
    with pytest.raises(ConfigError, match="input_dropout"):
        Config(input_dropout=-0.1).validate()
