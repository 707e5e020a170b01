"""Inception score, mode coverage and the shipped MNIST classifier, against numpy computations."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from steinebm.data import load_dataset, read_cifar_batch
from steinebm.errors import UserError
from steinebm.evaluation import classifiers as inception
from steinebm.evaluation.classifiers import (
    CIFAR10Classifier,
    MNISTClassifier,
    classifier_accuracy,
    inception_score,
    load_classifier,
    mode_coverage,
    verify_sha256,
)

ASSET = Path(str(resources.files("steinebm") / "assets" / "mnist-classifier.pt"))
PROVENANCE = ASSET.with_suffix(".md")
CIFAR_ASSET = ASSET.with_name("cifar10-classifier.pt")
CIFAR_PROVENANCE = CIFAR_ASSET.with_suffix(".md")
FULL_CIFAR10 = Path(
    os.environ.get("STEINEBM_TEST_CIFAR10", Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10")
)
# Accuracy of the shipped CIFAR-10 classifier on the first 2,000 CIFAR-10 test images, as measured by
# scripts/train_cifar10_classifier.py (assets/cifar10-classifier.md); the test allows a small tolerance.
CIFAR_ACC_2000 = 0.8980


# --- reference classifiers and numpy references ------------------------------------------------


class Perfect(nn.Module):
    """Certain of the label written in pixel 0 (pixel 0 = label / 10)."""

    def forward(self, x: Tensor) -> Tensor:
        label = torch.round(x.reshape(x.shape[0], -1)[:, 0] * 10).long()
        return 1e4 * nn.functional.one_hot(label, 10).to(x.dtype)


class TableSoft(nn.Module):
    """Logits table[label] for the label written in pixel 0: uncertain, non-degenerate p(y|x)."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = torch.from_numpy(table.astype(np.float32))

    def forward(self, x: Tensor) -> Tensor:
        label = torch.round(x.reshape(x.shape[0], -1)[:, 0] * 10).long()
        return self.table[label]


class FirstPixels(nn.Module):
    """Logits = 8 * the first 10 pixels."""

    def forward(self, x: Tensor) -> Tensor:
        return 8 * x.reshape(x.shape[0], -1)[:, :10]


def encode(labels: np.ndarray) -> Tensor:
    x = torch.zeros(len(labels), 784)
    x[:, 0] = torch.from_numpy(np.asarray(labels, dtype=np.float32)) / 10
    return x


def np_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def np_is(p: np.ndarray) -> float:
    """exp(mean_x sum_y p(y|x) (log p(y|x) - log p(y))), 0 log 0 = 0, by an explicit double loop."""
    py = p.mean(0)
    total = 0.0
    for row in p:
        for y, pyx in enumerate(row):
            if pyx > 0:
                total += pyx * (np.log(pyx) - np.log(py[y]))
    return float(np.exp(total / len(p)))


def np_entropy(counts: np.ndarray) -> float:
    q = counts[counts > 0] / counts.sum()
    return float(-(q * np.log(q)).sum())


RNG = np.random.default_rng(1234)
# A non-uniform label distribution with two empty classes and one below 1 %.
SKEWED_COUNTS = np.array([400, 250, 150, 100, 50, 30, 15, 5, 0, 0])
SKEWED = RNG.permutation(np.repeat(np.arange(10), SKEWED_COUNTS))


# --- inception score -----------------------------------------------------------------------------


def test_perfect_classifier_balanced_gives_ten():
    labels = np.arange(1000) % 10  # every split of 100 holds each class 10 times
    mean, std = inception_score(encode(labels), Perfect(), n_splits=10, batch_size=128)
    assert mean == pytest.approx(10.0, abs=1e-6)
    assert std == pytest.approx(0.0, abs=1e-6)


def test_perfect_classifier_single_class_gives_one():
    mean, std = inception_score(encode(np.full(500, 3)), Perfect(), n_splits=5)
    assert mean == pytest.approx(1.0, abs=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_perfect_classifier_skewed_is_exp_label_entropy():
    mean, std = inception_score(encode(SKEWED), Perfect(), n_splits=1)
    q = SKEWED_COUNTS / SKEWED_COUNTS.sum()
    q = q[q > 0]
    assert mean == pytest.approx(float(np.exp(-(q * np.log(q)).sum())), rel=1e-9)
    assert std == 0.0
    assert 1 < mean < 10


def test_soft_classifier_matches_numpy():
    table = RNG.normal(0, 2.0, (10, 10))
    clf = TableSoft(table)
    mean, _ = inception_score(encode(SKEWED), clf, n_splits=1, batch_size=77)
    p = np_softmax(table.astype(np.float32)[SKEWED])
    assert mean == pytest.approx(np_is(p), rel=1e-9)
    # the score of uncertain predictions is below that of certain ones
    perfect, _ = inception_score(encode(SKEWED), Perfect(), n_splits=1)
    assert mean < perfect


def test_splits_match_numpy_loop():
    n, splits = 1003, 7
    x = torch.rand(n, 784, generator=torch.Generator().manual_seed(5))
    mean, std = inception_score(x, FirstPixels(), n_splits=splits, batch_size=64)
    p = np_softmax(8 * x[:, :10].numpy())
    scores = [np_is(p[i * n // splits : (i + 1) * n // splits]) for i in range(splits)]
    assert mean == pytest.approx(float(np.mean(scores)), rel=1e-9)
    assert std == pytest.approx(float(np.std(scores)), rel=1e-7)
    assert std > 0
    whole, _ = inception_score(x, FirstPixels(), n_splits=1)
    assert whole == pytest.approx(np_is(p), rel=1e-9)


def test_splits_are_contiguous_chunks():
    # sorted by class, each of the 10 chunks holds one class: every chunk scores 1
    labels = np.repeat(np.arange(10), 50)
    mean, _ = inception_score(encode(labels), Perfect(), n_splits=10)
    assert mean == pytest.approx(1.0, abs=1e-9)
    mean, _ = inception_score(encode(labels), Perfect(), n_splits=1)
    assert mean == pytest.approx(10.0, abs=1e-6)


def test_batch_size_and_input_types_do_not_change_the_score():
    table = RNG.normal(0, 2.0, (10, 10))
    x = encode(SKEWED)
    ref = inception_score(x, TableSoft(table), n_splits=4, batch_size=1000)
    for bs in (1, 7, 333):
        assert inception_score(x, TableSoft(table), n_splits=4, batch_size=bs) == pytest.approx(ref, rel=1e-12)
    assert inception_score(x.numpy(), TableSoft(table), n_splits=4) == pytest.approx(ref, rel=1e-12)
    assert inception_score(x.reshape(-1, 1, 28, 28), TableSoft(table), n_splits=4) == pytest.approx(ref, rel=1e-12)


def test_module_in_train_mode_is_evaluated_in_eval_mode_and_restored():
    torch.manual_seed(0)
    model = MNISTClassifier().train()  # dropout and batch statistics would make scores random
    x = torch.rand(64, 784, generator=torch.Generator().manual_seed(1))
    a = inception_score(x, model, n_splits=2, batch_size=16)
    b = inception_score(x, model, n_splits=2, batch_size=64)
    assert a == pytest.approx(b, rel=1e-6)
    assert model.training


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (torch.zeros(0, 784), {}, "non-empty"),
        (encode(np.arange(5)), {"n_splits": 10}, "at least n_splits"),
        (encode(np.arange(20)), {"n_splits": 0}, "n_splits"),
        (encode(np.arange(20)), {"n_splits": 2, "batch_size": 0}, "batch_size"),
        (torch.zeros(20, 784, dtype=torch.int64), {"n_splits": 2}, "floating point"),
    ],
)
def test_bad_input_raises_value_error(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        inception_score(images, Perfect(), **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_images_raise(bad):
    x = encode(np.arange(20) % 10)
    x[3, 100] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        inception_score(x, Perfect(), n_splits=2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        mode_coverage(x, Perfect())


def test_bad_classifier_argument():
    x = encode(np.arange(20) % 10)
    with pytest.raises(UserError, match="unknown classifier"):
        inception_score(x, "cifar", n_splits=2)
    with pytest.raises(TypeError):
        inception_score(x, 42, n_splits=2)  # type: ignore[arg-type]

    class NotLogits(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[:, 0]

    with pytest.raises(ValueError, match="logits of shape"):
        inception_score(x, NotLogits(), n_splits=2)


# --- mode coverage and accuracy -----------------------------------------------------------------


def test_mode_coverage_skewed():
    cov = mode_coverage(encode(SKEWED), Perfect(), batch_size=64)
    assert cov["counts"] == SKEWED_COUNTS.tolist()
    assert cov["n"] == 1000
    assert cov["classes_present"] == 8
    assert cov["covered_1pct"] == 7  # 5 of 1000 is below 1 %
    assert cov["entropy"] == pytest.approx(np_entropy(SKEWED_COUNTS), rel=1e-12)
    assert cov["max_entropy"] == pytest.approx(np.log(10))


def test_mode_coverage_balanced_and_single():
    cov = mode_coverage(encode(np.arange(1000) % 10), Perfect())
    assert cov["counts"] == [100] * 10
    assert (cov["classes_present"], cov["covered_1pct"]) == (10, 10)
    assert cov["entropy"] == pytest.approx(np.log(10), abs=1e-12)
    cov = mode_coverage(encode(np.full(300, 7)), Perfect())
    assert cov["counts"] == [0] * 7 + [300] + [0] * 2
    assert (cov["classes_present"], cov["covered_1pct"]) == (1, 1)
    assert cov["entropy"] == 0.0


@pytest.mark.parametrize("minor, covered", [(10, 2), (9, 1)])
def test_mode_coverage_one_percent_boundary(minor, covered):
    labels = np.r_[np.zeros(1000 - minor, dtype=int), np.full(minor, 4)]
    cov = mode_coverage(encode(labels), Perfect())
    assert cov["classes_present"] == 2
    assert cov["covered_1pct"] == covered  # exactly 1 % counts as covered


def test_classifier_accuracy_against_count():
    labels = np.arange(500) % 10
    wrong = (labels + 1) % 10
    y = labels.copy()
    y[:37] = wrong[:37]
    assert classifier_accuracy(Perfect(), encode(labels), torch.from_numpy(y)) == pytest.approx(1 - 37 / 500)
    assert classifier_accuracy(Perfect(), encode(labels), y) == pytest.approx(1 - 37 / 500)
    with pytest.raises(ValueError, match="labels"):
        classifier_accuracy(Perfect(), encode(labels), y[:-1])


# --- the shipped classifier ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_test():
    return load_dataset("mnist-embedded").test


@pytest.fixture(scope="module")
def shipped():
    return load_classifier()


def test_shipped_weights_checksum_and_provenance():
    data = ASSET.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", inception.MNIST_CLASSIFIER_SHA256)
    assert digest == inception.MNIST_CLASSIFIER_SHA256
    assert verify_sha256(ASSET, digest) == data
    assert len(data) < 2 * 1024 * 1024
    assert digest in PROVENANCE.read_text()


def test_shipped_classifier_loads_in_eval_mode(shipped):
    assert isinstance(shipped, MNISTClassifier)
    assert not shipped.training
    assert all(p.dtype == torch.float32 for p in shipped.parameters())


def test_shipped_classifier_accuracy(shipped, mnist_test):
    assert len(mnist_test) == 1000
    acc = classifier_accuracy(shipped, mnist_test.x, mnist_test.y)
    assert acc >= 0.985
    assert classifier_accuracy("mnist", mnist_test.x, mnist_test.y) == acc
    # independent count
    with torch.no_grad():
        pred = shipped(mnist_test.x.reshape(-1, 1, 28, 28)).argmax(1).numpy()
    assert acc == pytest.approx(float(np.mean(pred == mnist_test.y.numpy())))


def test_shipped_classifier_input_shapes_agree(shipped, mnist_test):
    x = mnist_test.x[:50]
    with torch.no_grad():
        a = shipped(x)
        b = shipped(x.reshape(-1, 1, 28, 28))
        c = shipped(x.reshape(-1, 28, 28))
    assert a.shape == (50, 10)
    assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(ValueError, match="MNIST images"):
        shipped(torch.zeros(3, 783))


def test_real_mnist_scores_high(mnist_test):
    mean, std = inception_score(mnist_test.x, "mnist")
    assert 9.0 < mean <= 10.0
    assert std < 0.5
    cov = mode_coverage(mnist_test.x)
    assert (cov["classes_present"], cov["covered_1pct"]) == (10, 10)
    assert cov["entropy"] > 0.99 * np.log(10)
    # noise is not digits: far lower score
    noise = torch.rand(200, 784, generator=torch.Generator().manual_seed(0))
    assert inception_score(noise, n_splits=2)[0] < 5.0


def test_shipped_classifier_refuses_images_outside_unit_range(mnist_test):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inception_score(mnist_test.x[:100] * 2 - 1, n_splits=2)


# --- checksums and safe loading -----------------------------------------------------------------


def test_tampered_weights_fail_checksum(tmp_path):
    copy = tmp_path / "w.pt"
    data = bytearray(ASSET.read_bytes())
    copy.write_bytes(bytes(data))
    verify_sha256(copy, inception.MNIST_CLASSIFIER_SHA256)  # intact copy passes
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256") as err:
        verify_sha256(copy, inception.MNIST_CLASSIFIER_SHA256)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="cannot read"):
        verify_sha256(tmp_path / "missing.pt", inception.MNIST_CLASSIFIER_SHA256)


def test_load_classifier_checks_the_shipped_checksum(monkeypatch):
    monkeypatch.setattr(inception, "MNIST_CLASSIFIER_SHA256", "0" * 64)
    with pytest.raises(UserError, match="sha256") as err:
        load_classifier()
    assert "\n" not in str(err.value)


def test_load_classifier_from_path(tmp_path, shipped):
    copy = tmp_path / "w.pt"
    copy.write_bytes(ASSET.read_bytes())
    mine = load_classifier(path=copy)
    assert not mine.training
    for (k1, v1), (k2, v2) in zip(mine.state_dict().items(), shipped.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)

    with pytest.raises(UserError, match="cannot read"):
        load_classifier(path=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load") as err:
        load_classifier(path=tmp_path / "junk.pt")
    assert "\n" not in str(err.value)
    torch.save(nn.Linear(3, 3).state_dict(), tmp_path / "other.pt")
    with pytest.raises(UserError, match="do not fit") as err:
        load_classifier(path=tmp_path / "other.pt")
    assert "\n" not in str(err.value)


class _Plant:
    """Unpickling this creates a file: the kind of code a weights file must not be able to run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_code_in_a_weights_file_is_not_run(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"features.0.weight": torch.zeros(1), "payload": _Plant(marker)}, evil)

    # control: an unrestricted load does run it
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=True)
    assert not marker.exists()
    with pytest.raises(UserError, match="cannot load") as err:
        load_classifier(path=evil)
    assert "\n" not in str(err.value)
    assert not marker.exists()


# --- the shipped CIFAR-10 classifier ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_shipped():
    return load_classifier("cifar10")


@pytest.fixture(scope="module")
def cifar_like():
    """200 synthetic 32x32 RGB images in [0, 1]: smooth colour blobs plus noise, not CIFAR-10."""
    g = torch.Generator().manual_seed(7)
    low = torch.rand(200, 3, 4, 4, generator=g)
    smooth = nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(200, 3, 32, 32, generator=g)).clamp(0, 1)


def test_cifar10_weights_checksum_and_provenance():
    data = CIFAR_ASSET.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", inception.CIFAR10_CLASSIFIER_SHA256)
    assert digest == inception.CIFAR10_CLASSIFIER_SHA256
    assert verify_sha256(CIFAR_ASSET, digest) == data
    assert len(data) < 5 * 1024 * 1024
    note = CIFAR_PROVENANCE.read_text()
    assert digest in note and f"{len(data):,}" in note


def test_cifar10_weights_are_a_plain_float32_state_dict():
    state = torch.load(io.BytesIO(CIFAR_ASSET.read_bytes()), map_location="cpu", weights_only=True)
    fresh = CIFAR10Classifier().state_dict()
    assert list(state) == list(fresh)
    for k, v in state.items():
        assert isinstance(v, Tensor) and v.shape == fresh[k].shape
        assert v.dtype == (torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 272_474


def test_cifar10_classifier_loads_in_eval_mode(cifar_shipped):
    assert isinstance(cifar_shipped, CIFAR10Classifier)
    assert not cifar_shipped.training
    assert sum(p.numel() for p in cifar_shipped.parameters()) == 272_474
    assert all(p.dtype == torch.float32 for p in cifar_shipped.parameters())


def test_cifar10_classifier_input_shapes(cifar_shipped, cifar_like):
    x = cifar_like[:20]
    with torch.no_grad():
        a = cifar_shipped(x)
        b = cifar_shipped(x.reshape(20, -1))
    assert a.shape == (20, 10)
    assert torch.equal(a, b)
    for bad in (torch.zeros(3, 3071), torch.zeros(3, 32, 32, 3), torch.zeros(3, 1, 32, 32)):
        with pytest.raises(ValueError, match="CIFAR-10 images"):
            cifar_shipped(bad)


def test_cifar10_inception_score_matches_numpy(cifar_shipped, cifar_like):
    n, splits = cifar_like.shape[0], 3
    mean, std = inception_score(cifar_like, "cifar10", n_splits=splits, batch_size=64)
    with torch.no_grad():
        logits = cifar_shipped(cifar_like).numpy()
    p = np_softmax(logits)
    scores = [np_is(p[i * n // splits : (i + 1) * n // splits]) for i in range(splits)]
    assert mean == pytest.approx(float(np.mean(scores)), rel=1e-5)
    assert std == pytest.approx(float(np.std(scores)), rel=1e-3, abs=1e-6)
    assert 1.0 <= mean <= 10.0
    cov = mode_coverage(cifar_like, "cifar10", batch_size=64)
    assert cov["counts"] == np.bincount(logits.argmax(1), minlength=10).tolist()
    assert cov["n"] == n and cov["max_entropy"] == pytest.approx(np.log(10))


def test_cifar10_refuses_images_outside_unit_range(cifar_like):
    with pytest.raises(ValueError, match=r"\[0, 1\] for the CIFAR-10 classifier"):
        inception_score(cifar_like * 2 - 1, "cifar10", n_splits=2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mode_coverage(cifar_like + 0.01, "cifar10")


def test_cifar10_tampered_weights_refused(tmp_path, monkeypatch):
    data = bytearray(CIFAR_ASSET.read_bytes())
    data[len(data) // 3] ^= 0x01
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / CIFAR_ASSET.name).write_bytes(bytes(data))
    # the shipped-weights path, pointed at a package folder holding the tampered file
    monkeypatch.setattr(inception.resources, "files", lambda package: tmp_path)
    with pytest.raises(UserError, match="sha256") as err:
        load_classifier("cifar10")
    assert "\n" not in str(err.value) and "train_cifar10_classifier.py" in str(err.value)
    with pytest.raises(UserError, match="sha256"):
        inception_score(torch.rand(20, 3072), "cifar10", n_splits=2)
    with pytest.raises(UserError, match="sha256") as err:
        verify_sha256(tmp_path / "assets" / CIFAR_ASSET.name, inception.CIFAR10_CLASSIFIER_SHA256)
    assert "\n" not in str(err.value)


def test_cifar10_checksum_constant_is_checked(monkeypatch):
    monkeypatch.setattr(inception, "CIFAR10_CLASSIFIER_SHA256", "f" * 64)
    with pytest.raises(UserError, match="sha256") as err:
        load_classifier("cifar10")
    assert "\n" not in str(err.value)
    load_classifier("mnist")  # the other classifier's check is unaffected


def test_cifar10_load_from_path_and_wrong_architecture(tmp_path, cifar_shipped):
    copy = tmp_path / "c.pt"
    copy.write_bytes(CIFAR_ASSET.read_bytes())
    mine = load_classifier("cifar10", path=copy)
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), cifar_shipped.state_dict().values()))
    with pytest.raises(UserError, match="do not fit MNISTClassifier") as err:
        load_classifier("mnist", path=copy)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="do not fit CIFAR10Classifier"):
        load_classifier("cifar10", path=ASSET)


@pytest.fixture(scope="module")
def cifar10_test_2000():
    batch = FULL_CIFAR10 / "cifar-10-batches-py" / "test_batch"
    if not batch.is_file():
        pytest.skip(
            f"CIFAR-10 not found at {FULL_CIFAR10} (set STEINEBM_TEST_CIFAR10 to the folder with cifar-10-batches-py)"
        )
    x, y = read_cifar_batch(batch)
    return torch.from_numpy(x[:2000].astype(np.float32) / 255.0), torch.from_numpy(y[:2000])


def test_cifar10_classifier_accuracy_on_real_test_images(cifar_shipped, cifar10_test_2000):
    x, y = cifar10_test_2000
    acc = classifier_accuracy("cifar10", x, y)
    assert acc >= CIFAR_ACC_2000 - 0.01
    with torch.no_grad():  # independent count from the module's own logits
        pred = np.concatenate([cifar_shipped(x[i : i + 500]).argmax(1).numpy() for i in range(0, 2000, 500)])
    assert acc == pytest.approx(float(np.mean(pred == y.numpy())))
    # the ten classes are each predicted for roughly their share (200 each) of the images
    assert np.bincount(pred, minlength=10).min() > 120


def test_cifar10_real_images_score_far_above_noise(cifar10_test_2000):
    x, _ = cifar10_test_2000
    real, _ = inception_score(x, "cifar10", n_splits=2)
    noise, _ = inception_score(torch.rand(400, 3072, generator=torch.Generator().manual_seed(0)), "cifar10", n_splits=2)
    assert real > 6.0
    assert noise < 3.0


LENET_ASSET = ASSET.with_name("mnist-lenet.pt")


def test_second_mnist_classifier_checksum_provenance_and_accuracy(mnist_test):
    """The second classifier: checksummed, documented, another architecture, and accurate by
    an independent count of its correct predictions."""
    data = LENET_ASSET.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert digest == inception.MNIST_LENET_SHA256 != inception.MNIST_CLASSIFIER_SHA256
    assert digest in LENET_ASSET.with_suffix(".md").read_text()
    assert len(data) < 3 * 1024 * 1024
    lenet = load_classifier("mnist-lenet")
    assert isinstance(lenet, inception.MNISTLeNet) and not lenet.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lenet.modules())
    with torch.no_grad():
        pred = lenet(mnist_test.x).argmax(1).numpy()
    assert float(np.mean(pred == mnist_test.y.numpy())) >= 0.985
    # the two classifiers are not one network twice: they disagree on some noise images
    noise = torch.rand(200, 784, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = load_classifier("mnist")(noise).argmax(1), lenet(noise).argmax(1)
    assert bool((a != b).any())


def test_second_mnist_classifier_tampered_file_is_refused(monkeypatch):
    monkeypatch.setattr(inception, "MNIST_LENET_SHA256", "0" * 64)
    with pytest.raises(UserError, match="sha256"):
        load_classifier("mnist-lenet")
