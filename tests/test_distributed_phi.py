"""The same step on 1, 2 or 3 processes (gloo): every process computes its rows of the global
phi (Eq. 5) from the particles and scores gathered from all of them, so a step's parameter update
equals the one-process update to float rounding, for SteinCD, SteinGAN and the feature kernel.
Per-process phi (each process's particles alone) is shown to give another update."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from steinebm.core.distributed import SINGLE, Ranks, init_group
from steinebm.core.kernels import RBF, FeatureKernel
from steinebm.learners import SteinCD
from steinebm.learners.rules import EnergyRule, SteinGANRule
from steinebm.learners.steingan import SteinGAN
from steinebm.models.energies.rbm import GaussianBernoulliRBM

M, D, NOISE = 12, 5, 2  # particles (a multiple of 2 and 3), data dimension, noise dimension
CASES = ("steincd", "steingan", "steingan-feature-kernel")


def _one_step(case: str, ranks: Ranks, gather: bool, step: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """One step of ``case`` on this process's rows of a fixed batch; the parameters after it.
    ``gather=False`` computes phi on this process's particles alone (gradients still averaged)."""
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(7)
    x_all = torch.randn(M, D, generator=g) * 1.5 + 0.3  # the real batch
    z_all = torch.randn(M, NOISE, generator=g)  # the generator's noise, drawn once for all ranks
    model = GaussianBernoulliRBM(D, 3, generator=g)
    G = nn.Sequential(nn.Linear(NOISE, 8), nn.Tanh(), nn.Linear(8, D))
    encoder = nn.Sequential(nn.Linear(D, 4), nn.Tanh())
    for net in (G, encoder):
        for p in net.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.7
    encoder.requires_grad_(False)
    rows = ranks.rows(M // ranks.world)
    phi_ranks = ranks if gather else SINGLE
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    opt_g = torch.optim.SGD(G.parameters(), lr=0.05)
    rng = torch.Generator().manual_seed(1)
    if case == "steincd":
        learner = SteinCD(0.1, RBF())
        rule: EnergyRule | SteinGANRule = EnergyRule(learner, model, opt, ranks)
        learner.ranks = phi_ranks
    else:
        # an adaptive discount (its decision on batch means over ranks) and, for the feature
        # kernel, the authors' summed generator loss (scaled back by the number of ranks)
        if case == "steingan":
            sg = SteinGAN(RBF(), gamma=0.3, gamma_adaptive=0.6, ranks=phi_ranks)
        else:
            sg = SteinGAN(FeatureKernel(encoder, chunk=4), gamma=0.3, gen_loss="sum", ranks=phi_ranks)
        rule = SteinGANRule(sg, model, G, opt, opt_g, lambda _rng, _y: (G(z_all[rows]), None), ranks)
    if step:
        rule.step(x_all[rows], rng)
    return {"model": model.state_dict(), "generator": G.state_dict()}


def _rank_main(rank: int, world: int, store: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    init_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    dist.barrier()
    try:
        ranks = Ranks(rank, world, rank)
        result = {(case, gather): _one_step(case, ranks, gather) for case in CASES for gather in (True, False)}
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out) / f"phi-rank{rank}-of-{world}.pt")


def _spawn(world: int, tmp_path: Path) -> list[dict]:
    store = tmp_path / f"rendezvous-{uuid.uuid4().hex}"
    args = (world, str(store), str(tmp_path))
    mp.start_processes(_rank_main, args=args, nprocs=world, join=True, start_method="spawn")
    return [torch.load(tmp_path / f"phi-rank{r}-of-{world}.pt") for r in range(world)]


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[n][k] - b[n][k]).abs().max()) for n in a for k in a[n])


def test_a_step_on_2_and_3_processes_equals_the_one_process_step(tmp_path):
    default = torch.get_default_dtype()
    try:
        one = {case: _one_step(case, SINGLE, True) for case in CASES}
        before = _one_step("steincd", SINGLE, True)  # a second call: the step is deterministic
        assert _max_diff(one["steincd"], before) == 0.0
        for world in (2, 3):
            results = _spawn(world, tmp_path)
            for case in CASES:
                for r in range(world):
                    got = results[r][(case, True)]
                    for name in ("model", "generator"):
                        for k, v in one[case][name].items():
                            torch.testing.assert_close(
                                got[name][k], v, rtol=1e-10, atol=1e-12, msg=f"{case} {world} ranks {name}.{k}"
                            )
                # the step moved the parameters, and per-process phi moves them elsewhere: the
                # comparison above can tell the two algorithms apart
                assert _max_diff(one[case], _one_step(case, SINGLE, True, step=False)) > 1e-3, case
                per_rank = results[0][(case, False)]
                assert _max_diff(per_rank, one[case]) > 1e-6, f"{case} on {world} ranks: per-process phi"
    finally:
        torch.set_default_dtype(default)
