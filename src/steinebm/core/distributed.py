"""Several processes, one run: ``torchrun --nproc_per_node N -m steinebm.cli train CONFIG``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`from_env` joins the process
group (NCCL on CUDA, gloo on the CPU) and each process takes the GPU ``cuda:LOCAL_RANK``.

What a rank does, and why:

- ``batch_size`` is the global batch. Every rank walks the same seeded permutation of the
  data, and rank r takes the r-th of ``world`` equal slices of each global batch. So the data
  order does not depend on the number of processes, and a run resumes on another number.
- **SVGD particles couple across ranks, as on one process.** φ (Eq. 5) couples every particle
  with every other, so a rank that computed φ on its own ``batch_size / world`` particles would
  run another algorithm (SVGD with fewer particles, a bandwidth from fewer distances). Each
  rank therefore gathers the particles and their scores (:meth:`Ranks.gather_rows`, an m x d
  all-gather, small next to the m^2 d kernel products) and computes *its rows* of the global φ
  with the global median bandwidth (:func:`steinebm.core.svgd.svgd_direction`'s ``ranks``). φ is
  held fixed in every rule's surrogate, so nothing flows back through the gather. A feature
  kernel gathers the images and runs the (identical) encoder on all of them.
- What is not global: BatchNorm statistics in training mode are per rank (as under
  ``DistributedDataParallel`` without ``SyncBatchNorm``), and so are the random draws (the
  generator's noise, dropout masks): rank r draws its own particles.
- Decisions taken on batch means (SteinGAN's adaptive γ, the alternating schedule) use the
  means over all ranks, so every rank decides alike and as one process would.
- Gradients are averaged over ranks after each backward, one flattened all-reduce per
  optimizer (what ``DistributedDataParallel`` does). The wrapper itself is not used: the
  learners differentiate the energy with respect to its input (``torch.autograd.grad``) inside
  the step, which DDP does not support. Identical initial weights plus identical averaged
  updates keep the parameters identical on every rank.
- Rank 0 alone evaluates, logs, shows progress and writes checkpoints. The checkpoint holds
  every rank's random state, so a resume on the same number of processes continues exactly.
  On another number, the ranks beyond the saved ones get fresh seeds.
- BatchNorm running statistics stay per rank; rank 0's are the ones saved.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from steinebm.errors import UserError

__all__ = ["Ranks", "from_env", "init_group", "SINGLE"]


@dataclass(frozen=True)
class Ranks:
    """This process's place among ``world`` processes (``world == 1``: no process group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def local_slice(self, batch: Tensor) -> Tensor:
        """This rank's part of a global batch (rank r takes the r-th of ``world`` equal slices)."""
        if not self.active:
            return batch
        per = batch.shape[0] // self.world
        return batch[self.rank * per : (self.rank + 1) * per]

    def rows(self, m_local: int) -> slice:
        """This rank's rows in a batch gathered by :meth:`gather_rows` (``m_local`` rows each)."""
        return slice(self.rank * m_local, (self.rank + 1) * m_local)

    def gather_rows(self, t: Tensor) -> Tensor:
        """Every rank's ``t`` (m_local, ...), concatenated in rank order: (world * m_local, ...).
        Detached: the gathered particles and scores only enter φ, which the rules hold fixed."""
        t = t.detach()
        if not self.active:
            return t
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t)
        return torch.cat(parts)

    def all_true(self, flag: Tensor) -> bool:
        """``flag`` (a 0-d bool tensor) on every rank: one collective, so all ranks decide alike."""
        if not self.active:
            return bool(flag)
        t = flag.detach().to(torch.int32).reshape(1)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (a step's coin must come out alike everywhere)."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int32, device=_collective_device())
        dist.broadcast(t, src=0)
        return bool(t.item())

    def average_gradients(self, params: Iterable[Tensor]) -> None:
        """Replace each gradient by its mean over ranks (one all-reduce over a flat buffer)."""
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.world)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def mean_tensor(self, t: Tensor) -> Tensor:
        """The element-wise mean of ``t`` over ranks (every rank gets it)."""
        if not self.active:
            return t
        t = t.detach().clone()
        dist.all_reduce(t)
        return t / self.world

    def mean(self, value: float) -> float:
        """The mean of a Python number over ranks (for logs)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def gather_objects(self, obj: object) -> list[object]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[object] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = Ranks()


def _collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def from_env(device: str) -> tuple[Ranks, str]:
    """Join torchrun's process group if its variables are set; returns the ranks and the
    device this process should use (``cuda:LOCAL_RANK`` for ``device=cuda``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise UserError("WORLD_SIZE is set but RANK is not: start several processes with torchrun") from None
    on_gpu = device.startswith("cuda")
    if on_gpu:
        if not torch.cuda.is_available():
            raise UserError("device=cuda was asked for but no CUDA device is available: use device=cpu")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        init_group(backend="nccl" if on_gpu else "gloo", rank=rank, world_size=world)
    return Ranks(rank, world, local_rank), device


def init_group(backend: str, **kwargs: object) -> None:
    """``torch.distributed.init_process_group(backend, **kwargs)``, made so that :meth:`Ranks.close`
    can free the group.

    torch._dynamo (which an optimizer's constructor imports) keeps references to the process group
    that exists when it is first imported, so ``destroy_process_group`` would not free that group:
    its gloo worker threads would live on into the interpreter's shutdown, where one that frees a
    tensor Python created aborts the process ("terminate called without an active exception": 3
    of some 300 two-process exits on a loaded 2-core machine, after the run was saved). Imported
    before the group is made, it holds none."""
    importlib.import_module("torch._dynamo")
    dist.init_process_group(backend, **kwargs)  # type: ignore[arg-type]
