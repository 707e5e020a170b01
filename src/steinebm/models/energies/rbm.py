"""The Gaussian-Bernoulli RBM of Section 5.1, with an exact partition function."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from steinebm.precision import float64_device

__all__ = ["GaussianBernoulliRBM"]


def _negative_energy(x: Tensor, B: Tensor, b: Tensor, c: Tensor) -> Tensor:
    z = torch.addmm(c, x, B)  # m l
    # log(e^z + e^-z) = |z| + log1p(e^{-2|z|}), stable for large |z|
    az = z.abs()
    soft = (az + torch.log1p(torch.exp(-2.0 * az))).sum(1)  # m
    return x @ b - 0.5 * (x * x).sum(1) + soft


def _hidden_states(n_bits: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """All 2^n_bits vectors in {-1, +1}^n_bits, (2^n_bits, n_bits)."""
    codes = torch.arange(2**n_bits, device=device).unsqueeze(1)
    bits = (codes >> torch.arange(n_bits, device=device)) & 1
    return bits.to(dtype).mul_(2).sub_(1)


class GaussianBernoulliRBM(nn.Module):
    """Gaussian-Bernoulli RBM with hidden units in {-1, +1} (Section 5.1).

    Negative energy (the log of the unnormalised marginal of x)::

        f(x) = b^T x - 1/2 ||x||^2 + sum_k log(exp(z_k) + exp(-z_k)),   z = B^T x + c

    Parameters: ``B`` (d, l), ``b`` (d,), ``c`` (l,). Initialisation as the authors' code:
    B uniform in +-4 sqrt(6 / (d + l)), zero biases. The paper's joint density prints a 1/2 in
    front of x^T B h; the marginal above, without it, is the model used everywhere here.

    >>> import torch
    >>> rbm = GaussianBernoulliRBM(n_visible=3, n_hidden=2)
    >>> rbm.forward(torch.zeros(1, 3)).shape
    torch.Size([1])
    >>> x = torch.zeros(1, 3)
    >>> abs(float(rbm.log_prob(x) - rbm.forward(x).detach().double() + rbm.log_partition())) < 1e-5
    True
    """

    def __init__(self, n_visible: int, n_hidden: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if n_visible < 1 or n_hidden < 1:
            raise ValueError(f"n_visible and n_hidden must be >= 1, got {n_visible}, {n_hidden}")
        self.n_visible, self.n_hidden = n_visible, n_hidden
        a = 4.0 * math.sqrt(6.0 / (n_visible + n_hidden))
        B = (torch.rand(n_visible, n_hidden, generator=generator) * 2.0 - 1.0) * a
        self.B = nn.Parameter(B)
        self.b = nn.Parameter(torch.zeros(n_visible))
        self.c = nn.Parameter(torch.zeros(n_hidden))

    def forward(self, x: Tensor) -> Tensor:
        """f(x; theta) for x of shape (m, d) or (m, 1, 28, 28): returns (m,)."""
        x = x.reshape(x.shape[0], -1)
        return _negative_energy(x, self.B, self.b, self.c)

    def score(self, x: Tensor) -> Tensor:
        """Closed-form ``grad_x f = b - x + B tanh(B^T x + c)``, same shape as x."""
        shape, x = x.shape, x.reshape(x.shape[0], -1)
        t = torch.tanh(torch.addmm(self.c, x, self.B))
        return torch.addmm(self.b - x, t, self.B.T).view(shape)

    @torch.no_grad()
    def log_partition(self, max_block: int = 2**22) -> Tensor:
        """Exact ``log Z`` in float64, summing over all 2^l hidden states.

        ``log Z = (d/2) log 2 pi + logsumexp_h [1/2 ||b + B h||^2 + c^T h]``, and with
        ``G = B^T B``, ``u = B^T b``: ``1/2 ||b + B h||^2 = 1/2 ||b||^2 + u^T h + 1/2 h^T G h``,
        so after the (l x l) Gram matrix the cost does not depend on d.

        The states are split into a high and a low half, h = (h1, h2): the exponent is
        ``q1(h1) + q2(h2) + h1^T G12 h2``, so each block of (2^l1) x (2^l2) values is one small
        matmul; at most ``max_block`` values exist at once.
        """
        dev = float64_device(self.B.device)  # on the CPU for a model on MPS
        B, b, c = (p.to(dev, torch.float64) for p in (self.B, self.b, self.c))
        d, n = B.shape
        G = B.T @ B  # l l
        lin = B.T @ b + c  # l: u + c
        const = 0.5 * (b @ b) + 0.5 * d * math.log(2.0 * math.pi)
        n1 = n // 2
        n2 = n - n1
        H2 = _hidden_states(n2, torch.float64, B.device)  # 2^n2 n2
        G22, lin2 = G[n1:, n1:], lin[n1:]
        q2 = 0.5 * ((H2 @ G22) * H2).sum(1) + H2 @ lin2  # 2^n2
        if n1 == 0:
            return torch.logsumexp(q2, 0) + const
        G11, G12, lin1 = G[:n1, :n1], G[:n1, n1:], lin[:n1]
        rows = max(1, max_block // H2.shape[0])
        parts = []
        for start in range(0, 2**n1, rows):
            codes = torch.arange(start, min(start + rows, 2**n1), device=B.device).unsqueeze(1)
            H1 = ((codes >> torch.arange(n1, device=B.device)) & 1).double().mul_(2).sub_(1)
            q1 = 0.5 * ((H1 @ G11) * H1).sum(1) + H1 @ lin1  # r
            block = torch.addmm(q1.unsqueeze(1) + q2.unsqueeze(0), H1 @ G12, H2.T)  # r 2^n2
            parts.append(torch.logsumexp(block.reshape(-1), 0))
        return torch.logsumexp(torch.stack(parts), 0) + const

    @torch.no_grad()
    def log_prob(self, x: Tensor, log_z: Tensor | None = None) -> Tensor:
        """Exact ``log p(x) = f(x) - log Z`` per sample, in float64, shape (m,)."""
        if log_z is None:
            log_z = self.log_partition()
        dev = float64_device(self.B.device)
        x = x.reshape(x.shape[0], -1).to(dev, torch.float64)
        B, b, c = (p.to(dev, torch.float64) for p in (self.B, self.b, self.c))
        return _negative_energy(x, B, b, c) - log_z.to(dev)

    @torch.no_grad()
    def sample(self, n: int, n_steps: int = 1000, generator: torch.Generator | None = None) -> Tensor:
        """Block-Gibbs samples (n, d): ``p(h_k = +1 | x) = sigmoid(2 z_k)``, ``x | h ~ N(b + B h, I)``.

        Chains start from uniformly random hidden states and return the visible means
        ``b + B h`` of the last step (the usual noiseless picture of an RBM sample).
        """
        B, b, c = self.B, self.b, self.c
        h = torch.randint(0, 2, (n, self.n_hidden), generator=generator, device=B.device).to(B.dtype) * 2 - 1
        mean = torch.addmm(b, h, B.T)
        for _ in range(n_steps):
            x = mean + torch.randn(mean.shape, generator=generator, device=B.device, dtype=B.dtype)
            p = torch.sigmoid(2.0 * torch.addmm(c, x, B))
            h = (torch.rand(p.shape, generator=generator, device=B.device, dtype=B.dtype) < p).to(B.dtype) * 2 - 1
            mean = torch.addmm(b, h, B.T)
        return mean
