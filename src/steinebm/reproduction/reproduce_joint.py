"""The joint-energy SteinGAN on MNIST against the class-conditional DCGAN (``steinebm reproduce
mnist-joint``): the authors' ``mnist_steingan.py`` at full scale (configs/mnist-joint-*.yaml),
with and without the kernel, and the DCGAN on the same generator and epochs.

Each generator is judged, beside the real training set, by

- the inception score of ``is_samples`` images (every class equally often) under both MNIST
  classifiers, with the classes seen and the share each classifier reads as the label the image
  was drawn for;
- FID against the 10,000 test images, in the feature space of each MNIST classifier (their last
  hidden layer): ``fid_samples`` generated (or real training) images;
- the paper's train-on-generated measure (Figure 2): a ResNet trained on ``transfer_images``
  labelled generated images, its accuracy on the real test set, for two depths (ResNet-8 and
  ResNet-20); beside it the real training images and 500 real images repeated 100 times;
- near-duplicates among 2,000 images, and a 10 x 20 grid (one row per digit) like the authors'
  ``mnist_samples.png``, scored as one split.

Judging takes hours on a CPU (ten ResNet trainings on 50,000 images), so every measure of every
image set is saved in ``OUT/scores/<set>.json`` as soon as it is taken: a stopped command, run
again, trains nothing that is finished and takes only the measures still missing. The image sets
do not depend on each other: with ``jobs`` > 1 they are judged that many at a time, in worker
processes of one torch thread each.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from steinebm.data import fingerprint, load_dataset
from steinebm.engine.checkpoint import atomic_write, checkpoint_header
from steinebm.engine.config import Config
from steinebm.errors import UserError
from steinebm.naming import slug
from steinebm.reproduction.document import Block, claims_table, image_cell, page, table, text, write_page
from steinebm.shapes import MNIST_SHAPE

__all__ = [
    "JOINT_RUNS",
    "MEASURES_VERSION",
    "TRANSFER_DEPTHS",
    "mnist_joint",
    "mnist_joint_document",
    "conditional_images",
]

# name -> (preset, overrides)
JOINT_RUNS: dict[str, tuple[str, list[str]]] = {
    "SteinGAN": ("mnist-joint-steingan", []),
    "SteinGAN without kernel": ("mnist-joint-steingan", ["gen_kernel=constant"]),
    "DCGAN": ("mnist-joint-dcgan", []),
}
TRANSFER_DEPTHS = {"ResNet-8": 1, "ResNet-20": 3}  # basic blocks per stage
GRID_ROWS, GRID_COLS = 10, 20  # the authors' mnist_samples.png: a row of 20 per digit


@torch.no_grad()
def conditional_images(G: Any, labels: Tensor, seed: int = 0, batch_size: int = 1000) -> Tensor:
    """Images (n, 784) of a class-conditional generator for the given labels (n,), from seeded
    noise drawn on the CPU, in batches of ``batch_size`` (its BatchNorm may use batch statistics)."""
    from steinebm.models.common import uniform_noise

    device = next(G.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    was = G.training
    G.eval()
    try:
        out = []
        for k in range(0, len(labels), batch_size):
            y = labels[k : k + batch_size]
            xi = uniform_noise(len(y), G.noise_dim, rng).to(device)
            out.append(G(xi, y.to(device)).reshape(len(y), -1).cpu())
    finally:
        G.train(was)
    return torch.cat(out)


def _save_grid(images: Tensor, path: Path) -> Path:
    """A 10 x 20 grid (a row per digit) drawn as the authors drew ``mnist_samples.png``: 28-pixel
    tiles, no padding, no enlargement (560 x 280 pixels)."""
    from steinebm.grids import save_image_grid

    return save_image_grid(images, path, MNIST_SHAPE, nrow=GRID_COLS, scale=1, pad=0)


def _balanced(n: int, k: int = 10) -> Tensor:
    """Labels 0..k-1 in turn, (n,): every class equally often, in any prefix as evenly as can be."""
    return torch.arange(n) % k


# Raise when a measure changes (how images are drawn, a classifier, the ResNet's training): the
# measures saved before are then taken afresh.
MEASURES_VERSION = 1


class _Measures:
    """The measures of one image set kept in a JSON file, each written as soon as it is taken.
    ``key`` says which images were measured (the checkpoint's digest, the data's fingerprint): a
    file with another key, or one that cannot be read, is measured afresh. A measure's name holds
    the settings it depends on (how many images), so changing one setting retakes only the
    measures that depend on it.

    >>> import tempfile
    >>> m = _Measures(Path(tempfile.mkdtemp()) / "set.json", {"step": 5})
    >>> m.take("answer", lambda: 42), m.take("answer", lambda: 0)
    (42, 42)
    >>> again, other = _Measures(m.path, {"step": 5}), _Measures(m.path, {"step": 6})
    >>> again.take("answer", lambda: 0), other.take("answer", lambda: 0)
    (42, 0)

    Two commands judging the same set at once each keep what the other saved:

    >>> a, b = _Measures(m.path, {"step": 6}), _Measures(m.path, {"step": 6})
    >>> a.take("x", lambda: 1), b.take("y", lambda: 2)
    (1, 2)
    >>> sorted(_Measures(m.path, {"step": 6}).values)
    ['answer', 'x', 'y']
    """

    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path, self.key = path, key
        try:
            saved = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            saved = {}  # a file a kill cut short: its measures are taken again
        if not isinstance(saved, dict):
            saved = {}
        self.values: dict[str, Any] = saved.get("values", {}) if saved.get("key") == key else {}

    def take(self, measure: str, compute: Callable[[], Any]) -> Any:
        if measure not in self.values:
            value = compute()
            # another command may have judged this set meanwhile (one with --no-train beside a
            # training): keep what it saved too
            self.values = {**_Measures(self.path, self.key).values, **self.values, measure: value}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"key": self.key, "values": self.values}).encode()
            atomic_write(self.path, lambda fh: fh.write(text))  # a temp file of its own per writer
        return self.values[measure]


def _judge_sets(
    tasks: list[dict[str, Any]], jobs: int, data: Any, log: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Judge every image set of ``tasks`` (see :func:`_judge_set`), ``jobs`` at a time: in this
    process when ``jobs`` is 1, else in worker processes with one torch thread each (each set is
    hours of one thread on a CPU, and the sets do not depend on each other)."""
    if jobs <= 1 or len(tasks) <= 1:
        return {t["name"]: _judge_set(t, data, log) for t in tasks}
    from steinebm.reproduction.workers import map_in_workers

    return dict(zip([t["name"] for t in tasks], map_in_workers(_judge_set_worker, tasks, jobs)))


def _judge_set_worker(task: dict[str, Any]) -> dict[str, Any]:
    # flushed line by line: a log redirected to a file would otherwise hold a worker's lines back
    return _judge_set(task, None, functools.partial(print, flush=True))


def _judge_set(task: dict[str, Any], data: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """One image set's row: a generator's (``run_dir``: its images, every measure, its grid), the
    real training images' (``n_real``) or the duplicated few's (``copies``: the trained networks
    only). ``data`` is the dataset (None: read here, in a worker)."""
    from steinebm.engine.build import load_generator
    from steinebm.evaluation.sample_scores import score_images
    from steinebm.evaluation.transfer import duplicate_baseline

    if data is None:
        data = load_dataset(task["dataset"], task["data_dir"])
    out, name, device = Path(task["out"]), task["name"], task["device"]
    fid, n_transfer, epochs = task["fid_samples"], task["transfer_images"], task["transfer_epochs"]
    path = out / "scores" / f"{slug(name)}.json"
    key: dict[str, Any] = {"version": MEASURES_VERSION, "data": task["data_id"], "device": device}
    if "run_dir" in task:
        G = load_generator(task["run_dir"]).to(device)
        y = _balanced(task["is_samples"])
        # drawn only if a measure is missing (a second call finds them all saved)
        images = functools.cache(partial(conditional_images, G, y))
        log(f"mnist-joint: judging {name}")
        # the checkpoint's digest: a run trained again to the same step is other images
        run = checkpoint_header(task["run_dir"])  # its index only: no second read of the weights
        saved = _Measures(path, {**key, "step": run["step"], "checkpoint": run["digest"]})
        row = _judge(images, y, data.test, fid, n_transfer, epochs, log, name, saved, device)
        grid_y = torch.arange(GRID_ROWS).repeat_interleave(GRID_COLS)
        grid = conditional_images(G, grid_y, seed=1, batch_size=len(grid_y))
        png = _save_grid(grid, out / f"mnist-joint-{slug(name)}.png")
        row["grid"] = png.name
        row.update({f"grid_{k}": v for k, v in score_images(grid, n_splits=1).items() if "std" not in k})
        return row
    if "n_real" in task:
        x, y = data.train.x[: task["n_real"]], data.train.y[: task["n_real"]]
        real = "the real training set"
        return _judge(lambda: x, y, data.test, fid, n_transfer, epochs, log, real, _Measures(path, key), device)
    n, copies = task["copies"]
    x_dup, y_dup = duplicate_baseline(data.train.x, data.train.y, n=n, copies=copies, seed=0)
    measures = _Measures(path, key)
    return dict(_transfers(lambda: x_dup, y_dup, len(x_dup), data.test, epochs, log, name, measures, device))


def _judge(
    images: Callable[[], Tensor],
    y: Tensor,
    test: Any,
    fid_samples: int,
    transfer_images: int,
    transfer_epochs: int,
    log: Callable[[str], None],
    name: str,
    measures: _Measures,
    device: str = "cpu",
) -> dict[str, Any]:
    """Every measure of the module docstring for the images (n, 784) ``images()`` returns, drawn
    with labels y (n,); those already in ``measures`` are read from it (and ``images`` is not
    called for them)."""
    from steinebm.evaluation.likelihood import near_duplicate_fraction
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS, classifier_fid, label_agreement, score_images

    take, n = measures.take, f"of {len(y)}"
    row: dict[str, Any] = dict(take(f"scores {n}", lambda: dict(score_images(images()))))

    def agreement(c: str) -> float:
        return label_agreement(images(), y, c)

    def fid(c: str) -> float:
        return classifier_fid(images()[:fid_samples], test.x, c)

    for c in MNIST_CLASSIFIERS:
        row[f"{c}_label_agreement"] = take(f"{c}_label_agreement {n}", partial(agreement, c))
        row[f"{c}_fid"] = take(f"{c}_fid {n}, first {fid_samples}", partial(fid, c))
    row["near_duplicates"] = take(f"near_duplicates {n}", lambda: near_duplicate_fraction(images()))
    row.update(_transfers(images, y, transfer_images, test, transfer_epochs, log, name, measures, device))
    return row


def _transfers(
    images: Callable[[], Tensor],
    y: Tensor,
    k: int,
    test: Any,
    epochs: int,
    log: Callable[[str], None],
    name: str,
    measures: _Measures,
    device: str,
) -> dict[str, float]:
    """The accuracy of a network trained on the first ``k`` of the images ``images()`` returns
    (labels y), for each of :data:`TRANSFER_DEPTHS`."""
    k = min(k, len(y))

    def train(depth: str) -> float:
        log(f"mnist-joint: {name}: training {depth} on {k:,} images, {epochs} epochs")
        started = time.monotonic()

        def on_epoch(epoch: int, accuracy: float) -> None:
            minutes = (time.monotonic() - started) / 60
            said = f"training accuracy {accuracy:.4f}, {minutes:.0f} min"
            log(f"mnist-joint: {name}: {depth} epoch {epoch}/{epochs}, {said}")

        return _transfer(images()[:k], y[:k], test, TRANSFER_DEPTHS[depth], epochs, device, on_epoch)

    return {
        f"transfer_{d}": measures.take(f"transfer_{d} of {len(y)}, first {k}, {epochs} epochs", partial(train, d))
        for d in TRANSFER_DEPTHS
    }


def _transfer(
    x: Tensor,
    y: Tensor,
    test: Any,
    blocks: int,
    epochs: int,
    device: str,
    on_epoch: Callable[[int, float], None] | None = None,
) -> float:
    """Test accuracy of a ResNet (``blocks`` per stage) trained on labelled images (x, y)."""
    from steinebm.evaluation.transfer import train_on_images_accuracy

    return train_on_images_accuracy(
        x, y, test.x, test.y, epochs=epochs, batch_size=128, lr=0.1, seed=0, device=device,
        augment=False,  # crops and left-right flips change what a digit is
        image_shape=MNIST_SHAPE, num_classes=10, blocks=blocks, on_epoch=on_epoch,
    )  # fmt: skip


def mnist_joint(
    out: str | Path = "runs/mnist-joint",
    dataset: str = "mnist",
    data_dir: str | None = None,
    epochs: int = 100,
    n_train: int = 0,
    jobs: int = 2,
    device: str = "cpu",
    is_samples: int = 50_000,
    fid_samples: int = 10_000,
    transfer_images: int = 50_000,
    transfer_epochs: int = 10,
    authors_grid: str | Path | None = None,
    duplicates: tuple[int, int] = (500, 100),
    eval_samples: int | None = None,
    log: Callable[[str], None] = print,
    train: bool = True,
) -> dict[str, Any]:
    """Train the three runs of :data:`JOINT_RUNS` (resuming any that are unfinished), judge each
    generator and the real data, and write mnist-joint.md, summary.json and the grids.
    ``duplicates``: the paper's baseline of (n real images, each repeated k times);
    ``eval_samples``: images scored at each of a run's evaluations (default: the presets').

    Without ``train``, nothing is trained: the finished runs and the real images are judged and
    the other runs are listed as not finished. Run beside a training that is still under way, it
    puts an idle core to the hours of judging that do not wait for it."""
    import dataclasses

    from steinebm.engine.config_file import load_config
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS, read_grid, score_images
    from steinebm.reproduction.runs import finished_record, run_many

    if dataset not in ("mnist", "mnist-embedded"):
        raise UserError(f"mnist-joint is MNIST's experiment (its classifiers judge digits), not {dataset}'s")
    if min(is_samples, fid_samples, transfer_images) < GRID_ROWS * GRID_COLS:
        raise UserError(f"mnist-joint needs at least {GRID_ROWS * GRID_COLS} images for each measure")
    if max(fid_samples, transfer_images) > is_samples:
        raise UserError(
            f"mnist-joint draws {is_samples:,} images (--is-samples) and measures FID and the trained classifier on "
            "some of them: --fid-samples and --transfer-images must not exceed it"
        )
    out = Path(out)
    data = load_dataset(dataset, data_dir)  # before anything is created
    theirs = read_grid(authors_grid, GRID_ROWS, GRID_COLS) if authors_grid is not None else None
    cfgs: dict[str, Config] = {}
    for name, (preset, extra) in JOINT_RUNS.items():
        cfg = load_config(
            preset,
            [f"dataset={dataset}", f"epochs={epochs}", f"n_train={n_train}", f"device={device}", *extra]
            + ([] if eval_samples is None else [f"eval_samples={eval_samples}"]),
        )
        cfgs[name] = dataclasses.replace(cfg, data_dir=data_dir, out_dir=str(out / slug(name)))
    out.mkdir(parents=True, exist_ok=True)
    if not train:
        cfgs = {name: cfg for name, cfg in cfgs.items() if finished_record(cfg) is not None}
    results = dict(zip(cfgs, run_many(list(cfgs.values()), jobs, log)))

    rows: dict[str, dict[str, Any]] = {name: {"not_finished": True} for name in JOINT_RUNS if name not in results}
    # one task per image set: each generator, the real training images, the duplicated few
    common = dict(
        out=str(out), dataset=dataset, data_dir=data_dir, data_id=fingerprint(data), device=device,
        is_samples=is_samples, fid_samples=fid_samples, transfer_images=transfer_images,
        transfer_epochs=transfer_epochs,
    )  # fmt: skip
    tasks = [dict(common, name=name, run_dir=res["out_dir"]) for name, res in results.items() if not res["diverged"]]
    tasks.append(dict(common, name="real training images", n_real=min(is_samples, len(data.train.x))))
    tasks.append(dict(common, name=f"{duplicates[0]} real images x {duplicates[1]}", copies=duplicates))
    judged = _judge_sets(tasks, jobs, data, log)
    for name, res in results.items():
        rows[name] = {"diverged": res["diverged"]} if res["diverged"] else judged.pop(name)
    rows.update(judged)  # the real images' rows, after the generators'
    if theirs is not None:
        grid_y = torch.arange(GRID_ROWS).repeat_interleave(GRID_COLS)
        their = {f"grid_{k}": v for k, v in score_images(theirs, n_splits=1).items() if "std" not in k}
        from steinebm.evaluation.sample_scores import label_agreement

        for c in MNIST_CLASSIFIERS:
            their[f"grid_{c}_label_agreement"] = label_agreement(theirs, grid_y, c)
        # redrawn beside ours, so that the page shows the two side by side
        rows["the authors' grid"] = {"grid": _save_grid(theirs, out / "mnist-joint-authors-grid.png").name, **their}
    summary = {
        "epochs": epochs,
        "is_samples": is_samples,
        "fid_samples": fid_samples,
        "transfer_images": transfer_images,
        "transfer_epochs": transfer_epochs,
        "rows": rows,
        "claims": _claims(rows),
    }
    write_page(out, summary, page("mnist-joint.md", mnist_joint_document(summary)))
    return summary


def _claims(rows: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """The paper's claims for the joint-energy SteinGAN, judged where every choice agrees."""
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS

    sg, dc = rows.get("SteinGAN", {}), rows.get("DCGAN", {})
    claims = []
    if "mnist_is" in sg:
        scores = [sg[f"{c}_is"] for c in MNIST_CLASSIFIERS]
        ok = [s >= 9 for s in scores]
        verdict = "held" if all(ok) else "not held" if not any(ok) else "classifiers disagree"
        claims.append(
            {
                "claim": "SteinGAN's inception score reaches 9",
                "measured": ", ".join(f"{c} {s:.2f}" for c, s in zip(MNIST_CLASSIFIERS, scores)),
                "verdict": verdict,
            }
        )
    if "transfer_ResNet-8" in sg and "transfer_ResNet-8" in dc:
        wins = [sg[f"transfer_{d}"] >= dc[f"transfer_{d}"] for d in TRANSFER_DEPTHS]
        verdict = "held" if all(wins) else "not held" if not any(wins) else "classifiers disagree"
        claims.append(
            {
                "claim": "a classifier trained on SteinGAN's images beats one trained on DCGAN's",
                "measured": ", ".join(
                    f"{d} {100 * sg[f'transfer_{d}']:.2f} % vs {100 * dc[f'transfer_{d}']:.2f} %"
                    for d in TRANSFER_DEPTHS
                ),
                "verdict": verdict,
            }
        )
    return claims


def mnist_joint_document(summary: dict[str, Any]) -> list[Block]:
    """The page of ``reproduce mnist-joint``: every measure of each generator and of the real
    images (a diverged or unfinished run says so), its grid, and the paper's claims judged."""
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS

    def cell(name: str, row: dict[str, Any], key: str, fmt: str) -> str | dict[str, str]:
        if key == "grid" and key in row:
            return image_cell(row[key])
        return format(row[key], fmt) if key in row else ""

    cols = (
        [(f"IS {c}", f"{c}_is", ".2f") for c in MNIST_CLASSIFIERS]
        + [(f"label read {c}", f"{c}_label_agreement", ".3f") for c in MNIST_CLASSIFIERS]
        + [(f"FID {c}", f"{c}_fid", ".2f") for c in MNIST_CLASSIFIERS]
        + [(f"accuracy, {d} trained on it", f"transfer_{d}", ".4f") for d in TRANSFER_DEPTHS]
        + [("near-duplicates", "near_duplicates", ".3f")]
        + [(f"grid IS {c}", f"grid_{c}_is", ".2f") for c in MNIST_CLASSIFIERS]
        + [("grid", "grid", "")]
    )
    rows: list[list[Any]] = []
    for name, row in summary["rows"].items():
        if "diverged" in row:
            rows.append([name, f"diverged: {row['diverged']}", *[""] * (len(cols) - 1)])
        elif "not_finished" in row:
            rows.append([name, "not finished", *[""] * (len(cols) - 1)])
        else:
            rows.append([name, *(cell(name, row, k, f) for _, k, f in cols)])
    return [
        text(
            f"The joint-energy SteinGAN on MNIST, {summary['epochs']} epochs, seed 0. Inception scores of "
            f"{summary['is_samples']:,} images, FID of {summary['fid_samples']:,} against the 10,000 test images (in "
            f"each classifier's last hidden layer), test accuracy of a ResNet trained {summary['transfer_epochs']} "
            f"epochs on {summary['transfer_images']:,} images; grids of 10 rows x 20 (one split), drawn as the "
            "authors drew theirs (no padding), their grid redrawn the same way."
        ),
        table(["", *(h for h, _, _ in cols)], rows),
        claims_table(summary["claims"]),
    ]
