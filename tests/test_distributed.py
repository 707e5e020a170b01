"""Two processes on the CPU (gloo): gradients averaged over ranks, parameters identical on every
rank, one writer, resume on another number of processes, and torchrun end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from steinebm.core.distributed import SINGLE, Ranks, init_group
from steinebm.core.kernels import RBF
from steinebm.core.score import score
from steinebm.core.svgd import amortized_svgd_loss, svgd_direction
from steinebm.data import load_dataset
from steinebm.engine import train as T
from steinebm.engine.config import Config
from steinebm.learners import SteinCD
from steinebm.learners.steingan import SteinGAN

SMALL = dict(dataset="mnist-embedded", n_train=120, batch_size=20, n_hidden=4, progress=False, threads=1)


def _spawn(world: int, cfg: Config, tmp_path: Path) -> None:
    # The ranks meet through a file of their own (torch's FileStore), not a TCP port: a free port
    # picked here and released could be taken by another process before rank 0 binds it.
    store = tmp_path / f"rendezvous-{uuid.uuid4().hex}"
    args = (world, str(store), dict(cfg.__dict__), str(tmp_path))
    mp.start_processes(_rank_params, args=args, nprocs=world, join=True, start_method="spawn")


def _rank_params(rank: int, world: int, store: str, cfg_dict: dict, out: str) -> None:
    """Join the group, train, then save this rank's live parameters (the checkpoint only holds
    rank 0's). train() finds the group joined and uses it, as under torchrun."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    init_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    # every rank has joined before any may fail and leave: a rank that failed at once (a batch that
    # does not split) would otherwise close the connection another rank is still opening
    dist.barrier()
    cfg = Config(**cfg_dict)
    captured: dict = {}
    real_build = T.build_parts

    def build(*a, **k):
        parts = real_build(*a, **k)
        captured.update(parts.modules)
        return parts

    T.build_parts = build
    try:
        T.train(cfg, resume=(Path(cfg.out_dir) / T.CHECKPOINT).exists())
        dist.barrier()  # no rank leaves the group while another may still be using it
    finally:
        T.build_parts = real_build
        dist.destroy_process_group()
    torch.save({n: m.state_dict() for n, m in captured.items()}, Path(out) / f"rank{rank}.pt")


def test_single_process_ranks_change_nothing():
    x = torch.arange(12.0).reshape(6, 2)
    assert SINGLE.local_slice(x) is x and SINGLE.mean(2.5) == 2.5 and SINGLE.agree(True)
    assert SINGLE.all_true(torch.tensor(True)) and not SINGLE.all_true(torch.tensor(False))
    # rank r of 3 takes the r-th third
    assert torch.equal(Ranks(1, 3, 1).local_slice(x), x[2:4])


def test_two_ranks_of_steincd_end_where_one_process_ends_on_the_whole_batch(tmp_path):
    """2 gloo processes of SteinCD end where one process ends on the whole batch: each rank's phi
    is its rows of the whole batch's phi (particles and scores gathered), and the ranks' gradients
    are averaged before each Adam step. One process that averages, by hand, the gradients of the
    two half-batches with phi of each half alone (the per-rank algorithm) ends elsewhere."""
    steps = 5
    cfg = Config(method="steincd", out_dir=str(tmp_path / "run"), max_steps=steps, log_every=1, **SMALL).validate()
    _spawn(2, cfg, tmp_path)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k  # identical on both ranks

    # the reference: one process, the same data order, the whole batch
    data = load_dataset("mnist-embedded")
    x_train = data.train.x[: cfg.n_train]
    perm = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(cfg.seed * 100_003 + 0))
    learner = SteinCD(cfg.epsilon)
    whole = T.build_parts(cfg, data.dim, torch.device("cpu"))
    for b in range(steps):
        batch = x_train[perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
        o = whole.optimizers["optimizer"]
        o.zero_grad()
        learner.loss(whole.modules["model"], batch)[0].backward()
        o.step()
    ck = T.load_checkpoint(cfg.out_dir)
    for k, v in whole.modules["model"].state_dict().items():
        torch.testing.assert_close(ck["model"][k], v, rtol=1e-5, atol=1e-6)

    # the per-rank algorithm ends elsewhere (so the test can tell)
    parts = T.build_parts(cfg, data.dim, torch.device("cpu"))
    model, opt = parts.modules["model"], parts.optimizers["optimizer"]
    for b in range(steps):
        batch = x_train[perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
        grads = []
        for half in (batch[:10], batch[10:]):
            opt.zero_grad()
            learner.loss(model, half)[0].backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for p, g0, g1 in zip(model.parameters(), *grads):
            p.grad = (g0 + g1) / 2
        opt.step()
    assert not torch.allclose(model.B, ck["model"]["B"], rtol=1e-5, atol=1e-6)

    # one writer: each step's loss line once, the evaluations at the start and the end once
    recs = [json.loads(ln) for ln in Path(cfg.out_dir, "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss" in r] == list(range(1, steps + 1))
    assert [r["step"] for r in recs if "test_ll" in r] == [0, steps]
    assert len(ck["rng_ranks"]) == 2 and ck["step"] == steps


BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
DEAD_BIASES = ("fc.0.bias", "fc.3.bias", "deconv.0.bias")  # MNISTGenerator's layers followed by BatchNorm


def test_two_ranks_of_steingan_average_gradients_like_one_process_replaying_each_rank(tmp_path):
    """SteinGAN on 2 gloo ranks ends where one process ends that replays both ranks by hand with
    the learner objects: rank r draws its batch_size / 2 particles from its own stream (seed + 1 +
    1,000,003 r) through the generator in training mode (BatchNorm on those particles alone);
    the generator's Adam step takes the mean of the two ranks' amortized-SVGD gradients, each
    with rank r's rows of phi over *both* ranks' particles; then the energy's Adam step takes the
    mean of the two ranks' gradients on (real half r, rank r's particles as drawn before the
    generator moved). The replay with phi over each rank's own particles ends elsewhere."""
    steps = 3
    cfg = Config(method="steingan", gamma=0.3, out_dir=str(tmp_path / "gan"), max_steps=steps, **SMALL).validate()
    _spawn(2, cfg, tmp_path)
    ck = T.load_checkpoint(cfg.out_dir)
    assert ck["step"] == steps

    data = load_dataset("mnist-embedded")
    x_train = data.train.x[: cfg.n_train]
    perm = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(cfg.seed * 100_003 + 0))

    def replay(ranks: int, gather: bool = True) -> dict[str, dict[str, torch.Tensor]]:
        """The run's modules after ``steps`` steps replayed by hand for ``ranks`` ranks; phi over
        all ranks' particles (``gather``) or over each rank's own."""
        parts = T.build_parts(cfg, data.dim, torch.device("cpu"))  # the run's initial weights and Adams
        model, G = parts.modules["model"], parts.modules["generator"]
        opt, opt_g = parts.optimizers["optimizer"], parts.optimizers["gen_optimizer"]
        sg = SteinGAN(RBF(), gamma=cfg.gamma, epsilon=cfg.epsilon, cd_kernel=RBF())
        streams = [torch.Generator().manual_seed(cfg.seed + 1 + 1_000_003 * r) for r in range(ranks)]
        per = cfg.batch_size // ranks

        def averaged(opt: torch.optim.Optimizer, losses: list[torch.Tensor]) -> None:
            params = [p for group in opt.param_groups for p in group["params"]]
            grads = []
            for loss in losses:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grads.append([p.grad.clone() for p in params])
            for i, p in enumerate(params):
                p.grad = sum(g[i] for g in grads) / ranks
            opt.step()

        for b in range(steps):
            batch = x_train[perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            x_gen = [G(G.sample_noise(per, g)) for g in streams]  # once per step, before any update
            if gather:  # every particle, by hand: rank r's rows of the whole batch's phi
                xs = torch.cat([x.detach() for x in x_gen])
                phi = svgd_direction(xs, score(model, xs), RBF())
                averaged(opt_g, [amortized_svgd_loss(x, phi[r * per : (r + 1) * per]) for r, x in enumerate(x_gen)])
            else:
                averaged(opt_g, [sg.generator_loss(model, x)[0] for x in x_gen])
            halves = [batch[r * per : (r + 1) * per] for r in range(ranks)]
            averaged(opt, [sg.energy_loss(model, x, x_neg, False)[0] for x, x_neg in zip(halves, x_gen)])
        return {name: mod.state_dict() for name, mod in parts.modules.items()}

    two = replay(2)
    for name in ("model", "generator"):
        for k, v in two[name].items():
            # BatchNorm statistics stay per rank; the biases of the generator's layers that feed a
            # BatchNorm have a gradient of 0 up to rounding, which Adam turns into steps of either sign
            # (the ranks' rows of phi come from a product of another shape than the replay's
            # whole one: float32 rounding that Adam's division by sqrt(v) enlarges where a
            # gradient is near 0: 1.1e-6 at most here, against Adam steps of up to lr = 3e-4)
            if not k.endswith(BUFFERS) and not (name == "generator" and k in DEAD_BIASES):
                torch.testing.assert_close(ck[name][k], v, rtol=1e-5, atol=1e-5, msg=f"{name}.{k}")
    # phi over each rank's own particles ends elsewhere (so the test can tell)
    per_rank = replay(2, gather=False)
    assert not torch.allclose(per_rank["model"]["B"], ck["model"]["B"], rtol=1e-5, atol=1e-6)


def test_steincd_gan_coin_agrees_across_ranks_and_resumes_on_one_process(tmp_path):
    """SteinCD-GAN(0.5) on 2 ranks: rank 0's coin rules, so the parameters stay identical;
    then the run resumes on 1 process."""
    cfg = Config(
        method="steingan", alpha=0.5, steincd_optimizer="own", out_dir=str(tmp_path / "gan"), max_steps=3, **SMALL
    ).validate()
    _spawn(2, cfg, tmp_path)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for name in ("model", "generator"):
        for k, v in r0[name].items():
            if "running" in k or "num_batches" in k:
                continue  # BatchNorm statistics stay per rank
            assert torch.equal(v, r1[name][k]), (name, k)
    cfg.max_steps = 5
    T.train(cfg, resume=True)  # one process now: rank 0's random state goes on
    assert T.load_checkpoint(cfg.out_dir)["step"] == 5


def test_batch_must_split_over_ranks(tmp_path):
    cfg = Config(method="steincd", out_dir=str(tmp_path / "odd"), max_steps=1, **{**SMALL, "batch_size": 21})
    with pytest.raises(mp.ProcessRaisedException, match="does not split over 2 processes"):
        _spawn(2, cfg.validate(), tmp_path)
    assert not (tmp_path / "odd" / T.CHECKPOINT).exists()


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS``, with one thread per process. ``{try}``
    in an argument becomes the attempt's number (a fresh folder for each)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone binds its rendezvous store to port 0 (the kernel picks a free port as it binds)
    # and the processes' group reuses that store where torch shares it (2.13 does); a torch that
    # does not picks the group's port as free and binds it later, when another process may have
    # taken it. So a failure that says an address was in use is tried again, in a fresh folder;
    # any other failure fails.
    for attempt in range(3):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        cmd += [a.replace("{try}", str(attempt)) for a in args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
        if res.returncode == 0 or not re.search(r"EADDRINUSE|address already in use", res.stdout + res.stderr, re.I):
            break
        print(f"torchrun attempt {attempt + 1}: a port was taken:\n", res.stderr[-3000:], file=sys.stderr)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def test_torchrun_end_to_end(tmp_path):
    """The documented command line: torchrun starts 2 gloo processes that train one run."""
    train = ["-m", "steinebm.cli", "train", "method=steincd", "dataset=mnist-embedded", "n_train=120"]
    train += ["batch_size=20", "n_hidden=4", "max_steps=4", "progress=false", "threads=1"]
    _torchrun([*train, f"out_dir={tmp_path / 'tr{try}'}"])
    out = max(tmp_path.glob("tr*"))  # the attempt that ran
    ck = T.load_checkpoint(out)
    assert ck["step"] == 4 and len(ck["rng_ranks"]) == 2


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads a process's threads from Linux's /proc")
def test_closing_the_group_stops_its_threads(tmp_path):
    """Ranks.close() frees the process group, so no gloo thread outlives it into the interpreter's
    shutdown (where one that frees a tensor Python made aborts the process). An optimizer built
    after the group (as a run builds its own) imports torch._dynamo, which kept the group alive
    when it was imported after the group was made."""
    script = tmp_path / "ranks.py"
    script.write_text(
        "import os, sys, torch\n"
        "from steinebm.core.distributed import from_env\n"
        "ranks, _ = from_env('cpu')\n"
        "torch.optim.Adam(torch.nn.Linear(2, 2).parameters())\n"
        "ranks.gather_objects(ranks.rank)\n"
        "def names(when):  # this process's threads, one file per rank (their outputs would interleave)\n"
        "    tasks = os.listdir('/proc/self/task')\n"
        "    names = sorted(open(f'/proc/self/task/{t}/comm').read().strip() for t in tasks)\n"
        f"    open(os.path.join({str(tmp_path)!r}, f'{{when}}-{{ranks.rank}}.txt'), 'w').write(' '.join(names))\n"
        "names('open')\n"
        "ranks.close()\n"
        "names('closed')\n"
    )
    _torchrun([str(script)])
    opened = [(tmp_path / f"open-{r}.txt").read_text() for r in range(2)]
    closed = [(tmp_path / f"closed-{r}.txt").read_text() for r in range(2)]
    assert all("gloo" in names for names in opened), opened  # the check can see gloo's threads
    assert not any("gloo" in names for names in closed), closed
