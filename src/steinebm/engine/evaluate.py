"""What the loop measures at an evaluation: the test and validation log-likelihood of an energy
with a partition function (exact for an RBM with few hidden units, Eq. 23 enumerated; AIS
beyond), and an MNIST generator's images scored under both MNIST classifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from steinebm.evaluation.ais import ais_log_partition
from steinebm.evaluation.likelihood import EXACT_MAX_HIDDEN, log_likelihood, mean_negative_energy
from steinebm.models.energies import GaussianBernoulliRBM
from steinebm.precision import float64_device
from steinebm.shapes import MNIST_SHAPE

__all__ = ["evaluate_run", "score_generator"]


def evaluate_run(
    model: nn.Module,
    x_test: Tensor,
    x_val: Tensor,
    step: int,
    generator: nn.Module | None = None,
    eval_samples: int = 0,
    grid_png: Path | None = None,
) -> dict[str, Any]:
    """The record of one evaluation: ``test_ll`` and ``val_ll`` where the model has a partition
    function (with ``ll_stderr`` and ``ll_method`` "ais" where it is estimated), and with
    ``eval_samples`` the generator's scores (:func:`score_generator`)."""
    rec: dict[str, Any] = {}
    if isinstance(model, GaussianBernoulliRBM) and model.n_hidden > EXACT_MAX_HIDDEN:
        # too many hidden units to enumerate: one AIS log Z (seeded by the step) for both splits;
        # the chains are drawn where float64 is (the model's device, or the CPU for MPS), so the
        # generator must live there too
        dev = float64_device(model.B.device)
        ais_rng = torch.Generator(device=dev).manual_seed(step)
        est = ais_log_partition(model, n_chains=100, n_betas=2_000, generator=ais_rng, device=dev)
        rec["test_ll"] = mean_negative_energy(model, x_test) - est.log_z
        rec["val_ll"] = mean_negative_energy(model, x_val) - est.log_z
        rec["ll_stderr"], rec["ll_method"] = est.stderr, "ais"
    elif hasattr(model, "log_partition"):
        rec["test_ll"] = log_likelihood(model, x_test, "exact").value
        rec["val_ll"] = log_likelihood(model, x_val, "exact").value
    if eval_samples and generator is not None and grid_png is not None:
        rec.update(score_generator(generator, eval_samples, grid_png))
    return rec


def score_generator(G: nn.Module, n: int, grid_png: Path) -> dict[str, float]:
    """``n`` images from seeded noise scored under both MNIST classifiers, and the first 100 as
    a 10 x 10 grid (scored as one split, and saved to ``grid_png``). The generator's mode is
    left as it was."""
    from steinebm.evaluation.sample_scores import generated_images, grid_scores, score_images
    from steinebm.grids import save_image_grid

    was = G.training
    G.eval()
    try:
        x = generated_images(G, n, seed=0, batch_size=min(n, 1000))
    finally:
        G.train(was)
    scores = score_images(x)
    if n >= 100:
        scores.update(grid_scores(x))
        grid_png.parent.mkdir(exist_ok=True)
        save_image_grid(x[:100], grid_png, MNIST_SHAPE, nrow=10)
    return scores
