"""The joint-energy SteinGAN on MNIST as the authors' mnist_steingan.py trains it: their networks,
kernel, step schedule and learning-rate rules, each checked against a literal transcription of
their code or a computation made independently here."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steinebm.core.kernels import FeatureKernel
from steinebm.data import load_dataset
from steinebm.engine import build as B
from steinebm.engine import train as T
from steinebm.engine.config import Config
from steinebm.engine.config_file import load_config
from steinebm.errors import ConfigError
from steinebm.evaluation.sample_scores import generated_images
from steinebm.learners.steingan import AlternatingSchedule
from steinebm.models.energies import JointAutoencoderEnergy
from steinebm.models.mnist_nets import MNISTConditionalDiscriminator, MNISTConditionalGenerator

PRESET = T.Path(__file__).resolve().parents[1] / "configs" / "mnist-joint-steingan.yaml"
SMALL = dict(dataset="mnist-embedded", n_train=400, width=4, code_dim=8, progress=False, eval_samples=0)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist-embedded")


def _bn(h: torch.Tensor, g=None, b=None) -> torch.Tensor:
    """The authors' batchnorm: batch mean and (biased) variance, eps 1e-8, optional scale and shift."""
    dims = [0, 2, 3] if h.dim() == 4 else [0]
    u = h.mean(dims, keepdim=True)
    s = ((h - u) ** 2).mean(dims, keepdim=True)
    h = (h - u) / torch.sqrt(s + 1e-8)
    if g is not None:
        shape = (1, -1, 1, 1) if h.dim() == 4 else (1, -1)
        h = h * g.view(shape) + b.view(shape)
    return h


def _deconv_as_grad(h: torch.Tensor, w: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """Their deconv(h, w): the gradient of a stride-2, padding-2 convolution with w, taken with
    respect to its input of ``out_shape`` and seeded with h (how their ops.deconv defines it)."""
    x = torch.zeros(out_shape, requires_grad=True)
    (g,) = torch.autograd.grad(F.conv2d(x, w, stride=2, padding=2), x, grad_outputs=h)
    return g


def test_joint_energy_is_their_discrim_and_classifier(data):
    torch.manual_seed(0)
    f = JointAutoencoderEnergy.mnist(margin=0.2, width=4, code_dim=8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # give the scales, shifts and head values away from their initial ones
        for p in f.parameters():
            p.add_(0.3 * torch.randn_like(p))
    p = dict(f.named_parameters())
    x = data.train.x[:6].reshape(6, 1, 28, 28)
    y = data.train.y[:6]
    w1, w2 = p["autoencoder.encoder.conv1.weight"], p["autoencoder.encoder.conv2.weight"]
    fw = p["autoencoder.encoder.fc.weight"].T  # their (6272, 512) layout: T.dot(fl, fw)
    g2, b2 = p["autoencoder.encoder.bn2.weight"], p["autoencoder.encoder.bn2.bias"]
    g2t, b2t = p["autoencoder.decoder.bn1.weight"], p["autoencoder.decoder.bn1.bias"]
    # their discrim(X), dropout off, written out layer by layer
    cv1 = F.relu(F.conv2d(x, w1, stride=2, padding=2))
    cv2 = F.relu(_bn(F.conv2d(cv1, w2, stride=2, padding=2), g2, b2))
    hidden = F.relu(_bn(cv2.flatten(1) @ fw))
    flt = F.relu(_bn(hidden @ fw.T))
    dv2 = F.relu(_bn(_deconv_as_grad(flt.reshape(cv2.shape), w2, cv1.shape), g2t, b2t))
    rx = torch.sigmoid(_deconv_as_grad(dv2, w1, x.shape))
    mse = torch.sqrt(((x - rx) ** 2).flatten(1).sum(1))
    logits = hidden @ p["head.weight"].T + p["head.bias"]
    err = torch.clamp(-(F.log_softmax(logits, 1) * F.one_hot(y, 10)).sum(1), min=0.2)
    f.eval()
    torch.testing.assert_close(f(x, y), -(mse + err), rtol=1e-5, atol=1e-5)
    # tied: one weight per layer pair, and the energy's parameter count is theirs
    n = 4 * 25 + 8 * 4 * 25 + 2 * 8 + 8 * 49 * 8 + 2 * 4 + 8 * 10 + 10
    assert sum(q.numel() for q in f.parameters()) == n


def test_dropout_acts_on_input_and_code_in_training_only():
    f = JointAutoencoderEnergy.mnist(width=4, code_dim=8, input_dropout=0.3, head_dropout=0.3)
    x, y = torch.rand(8, 784), torch.arange(8) % 10
    f.eval()
    assert torch.equal(f(x, y), f(x, y))
    f.train()
    torch.manual_seed(0)
    a = f(x, y)
    torch.manual_seed(1)
    assert not torch.equal(a, f(x, y))


def test_generator_appends_the_label_to_every_layer():
    G = MNISTConditionalGenerator(bias=False, batchnorm="plain", bn_stats="batch", bn_eps=1e-8)
    shapes = [m.weight.shape for m in (G.fc1[0], G.fc2[0], G.up1[0], G.up2)]
    assert shapes == [(1024, 110), (6272, 1034), (138, 64, 5, 5), (74, 1, 5, 5)]
    xi = torch.rand(4, 100) * 2 - 1
    a, b = G(xi, torch.tensor([0, 1, 2, 3])), G(xi, torch.tensor([0, 1, 2, 4]))
    assert torch.all(a >= 0) and torch.all(a <= 1)
    assert not torch.allclose(a[3], b[3])
    D = MNISTConditionalDiscriminator()
    assert D(a, torch.tensor([0, 1, 2, 3])).shape == (4,)


def test_authors_mnist_bandwidth_and_their_repulsion_is_zero():
    torch.manual_seed(0)
    m = 10
    W = torch.randn(12, 5)
    feats = lambda x: torch.tanh(x @ W)  # noqa: E731
    x = torch.randn(m, 12)
    K, R = FeatureKernel(feats, repulsion="none", bandwidth_rule="authors-mnist").gram_and_repulsion(x)
    e = feats(x).detach().numpy().astype(np.float64)
    H = ((e[:, None] - e[None]) ** 2).sum(2)
    h = math.sqrt(0.5 * np.median(H.ravel()) / math.log(m + 1)) / 2.0  # their vgd_kernel, numpy's median
    np.testing.assert_allclose(K.numpy(), np.exp(-H / h**2 / 2.0), rtol=1e-5, atol=1e-7)
    assert torch.equal(R, torch.zeros_like(x))
    # their repulsive term, transcribed: grad of mean_i sum_j <dxkxy_i, E(x0_j)> w.r.t. x0
    Kt = torch.tensor(np.exp(-H / h**2 / 2.0), dtype=torch.float64)
    et = torch.tensor(e)
    dxkxy = (-Kt @ et + et * Kt.sum(1, keepdim=True)) / h**2
    x0 = x.double().requires_grad_(True)
    cost = (dxkxy @ torch.tanh(x0 @ W.double()).T).sum(1).mean()
    (rep,) = torch.autograd.grad(cost, x0)
    drive = torch.autograd.grad(torch.tanh(x0 @ W.double()).sum(), x0)[0]
    assert float(rep.norm()) < 1e-12 * float(drive.norm())


def _their_schedule(costs: list[tuple[float, float]], skip: float = 0.5) -> list[tuple[str, float, float]]:
    """mnist_steingan.py's loop, transcribed: per batch (kind, weight on generated, lr factor)."""
    n_updates, k, balance, boost = 0, 1, 0.3, 1.0
    out = []
    for c_data, c_vgd in costs:
        out.append(("g" if n_updates % (k + 1) == 0 else "d", balance, boost))
        n_updates += 1
        boost = 1.0
        if c_data > c_vgd:
            boost = 5.0
            balance = 0.3
        else:
            balance = 0.1
        if c_vgd > c_data + skip:
            n_updates = n_updates + k + 1 - n_updates % (k + 1)
    return out


def test_alternating_schedule_follows_their_loop():
    rng = np.random.default_rng(0)
    costs = [(float(a), float(b)) for a, b in rng.uniform(5, 7, size=(300, 2))]
    s = AlternatingSchedule(gamma=0.7, gamma_raised=0.9, lr_boost=5.0, skip_margin=0.5)
    ours = []
    for c_real, c_gen in costs:
        kind = "g" if s.generator_turn() else "d"
        ours.append((kind, round(1 - s.gamma_now(), 12), s.energy_lr_factor()))
        s.after(c_real, c_gen)
    theirs = [(kind, round(w, 12), f) for kind, w, f in _their_schedule(costs)]
    energy_rows = [(o, t) for o, t in zip(ours, theirs) if t[0] == "d"]
    assert [o[0] for o in ours] == [t[0] for t in theirs]
    assert len(energy_rows) > 50 and all(o == t for o, t in energy_rows)  # weight and lr where they act
    assert 0 < sum(t[0] == "g" for t in theirs) - sum(t[0] == "d" for t in theirs)  # some steps were skipped


def test_lr_decay_is_their_linear_decay():
    cfg = Config(epochs=100, lr_decay_from=50)
    for epoch in (0, 49, 50, 51, 75, 99):
        assert T.lr_decay(cfg, epoch) == pytest.approx(1.0 - max((epoch - 50) / (100 - 50), 0.0))
    assert T.lr_decay(Config(epochs=100), 99) == 1.0
    assert T.lr_decay(Config(epochs=2, lr_decay_from=50), 1) == 1.0  # a short run of a preset


def test_alternate_steps_update_one_part_each_and_boost_only_the_energy(tmp_path, data):
    cfg = load_config(PRESET, [f"{k}={v}" for k, v in SMALL.items()] + [f"out_dir={tmp_path / 'r'}"])
    parts = T.build_parts(cfg, 784, torch.device("cpu"))
    model, G, sched = parts.modules["model"], parts.modules["generator"], parts.modules["schedule"]
    x, y = data.train.x[:100], data.train.y[:100]
    rng = torch.Generator().manual_seed(0)

    def snap(mod):
        return [p.detach().clone() for p in mod.parameters()]

    e0, g0 = snap(model), snap(G)
    parts.step(x, rng, y)  # step 1: the generator's
    assert all(torch.equal(a, b) for a, b in zip(e0, snap(model)))
    assert not all(torch.equal(a, b) for a, b in zip(g0, snap(G)))
    sched.updates.fill_(1)  # make the next step the energy's, boosted
    sched.real_higher.fill_(True)
    opt = parts.optimizers["optimizer"]
    lr_before = opt.param_groups[0]["lr"]
    e1, g1 = snap(model), snap(G)
    parts.step(x, rng, y)
    assert all(torch.equal(a, b) for a, b in zip(g1, snap(G)))
    assert not all(torch.equal(a, b) for a, b in zip(e1, snap(model)))
    assert opt.param_groups[0]["lr"] == lr_before  # the boost held for that step only
    # Adam's first step moves each weight by about lr * factor: the boost shows in the size
    moved = max(float((a - b).abs().max()) for a, b in zip(e1, snap(model)))
    assert 4 * cfg.lr < moved <= 5 * cfg.lr * 1.01


def test_conditional_images_cycle_through_the_classes_row_by_row():
    class Echo(torch.nn.Module):
        noise_dim, n_classes = 3, 10

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, xi, y):
            return y.float()[:, None] + 0 * xi[:, :1]

    labels = generated_images(Echo(), 250, batch_size=70)[:, 0].long()
    assert labels[:100].reshape(10, 10).tolist() == [[r] * 10 for r in range(10)]
    assert torch.bincount(labels[:200], minlength=10).tolist() == [20] * 10


def test_alternate_run_resumes_bit_identically(tmp_path, data):
    over = [f"{k}={v}" for k, v in SMALL.items()] + ["epochs=2", "checkpoint_every=3", "log_every=2"]
    full = load_config(PRESET, over + [f"out_dir={tmp_path / 'full'}"])
    T.train(full, dataset=data)
    part = load_config(PRESET, over + [f"out_dir={tmp_path / 'part'}", "max_steps=6"])
    T.train(part, dataset=data)
    part.max_steps = 0
    T.train(part, resume=True, dataset=data)
    a, b = T.load_checkpoint(full.out_dir), T.load_checkpoint(part.out_dir)
    for key in ("model", "generator", "schedule"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


@pytest.mark.parametrize(
    "over, key",
    [
        (["model=rbm"], "schedule"),
        (["method=dcgan", "conditional=true", "model=rbm"], "schedule"),
        (["lr_decay_from=-1"], "lr_decay_from"),
        (["lr_decay_from=1.5"], "lr_decay_from"),
        (["head_dropout=1"], "head_dropout"),
        (["energy_lr_boost=0"], "energy_lr_boost"),
        (["model=rbm", "schedule=together", "gen_kernel=rbf"], "gen_labels"),
    ],
)
def test_bad_settings_name_their_key(over, key):
    with pytest.raises(ConfigError, match=f"config value {key}="):
        load_config(PRESET, over)


def test_a_seed_builds_the_same_networks_every_time():
    cfg = load_config(PRESET, ["width=4", "code_dim=8"])
    a, b = T.build_parts(cfg, 784, torch.device("cpu")), T.build_parts(cfg, 784, torch.device("cpu"))
    for name in ("model", "generator"):
        sa, sb = a.modules[name].state_dict(), b.modules[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # units that never fire make a covariance singular
def test_classifier_fid_is_the_frechet_distance_of_the_last_hidden_layer(data):
    import scipy.linalg

    from steinebm.evaluation.classifiers import load_classifier
    from steinebm.evaluation.sample_scores import classifier_features, classifier_fid, label_agreement

    a, b = data.train.x[:1200], data.test.x[:1000]  # more images than features: full-rank covariances
    for name in ("mnist", "mnist-lenet"):
        model = load_classifier(name)
        seen = []
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        hook = last.register_forward_hook(lambda mod, inp, out, seen=seen: seen.append(inp[0].detach()))
        with torch.no_grad():
            logits = model(a)
        hook.remove()
        torch.testing.assert_close(classifier_features(a, name).float(), seen[0], rtol=1e-5, atol=1e-5)
        fa, fb = (classifier_features(v, name).numpy() for v in (a, b))
        mu_a, mu_b, s_a, s_b = fa.mean(0), fb.mean(0), np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
        covmean = scipy.linalg.sqrtm(s_a @ s_b).real
        by_hand = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))
        assert classifier_fid(a, b, name) == pytest.approx(by_hand, rel=1e-4, abs=1e-4)
        agree = float((logits.argmax(1) == data.train.y[:1200]).double().mean())
        assert label_agreement(a, data.train.y[:1200], name) == pytest.approx(agree)


# reproduce mnist-joint at the smallest size it takes (200 images: its 10 x 20 grid)
SMALL_JOINT = dict(
    dataset="mnist-embedded",
    epochs=1,
    n_train=200,
    jobs=1,
    is_samples=200,
    fid_samples=200,
    transfer_images=200,
    transfer_epochs=1,
    eval_samples=0,
    log=lambda s: None,
)


def test_reproduce_mnist_joint_small(tmp_path, data):
    from PIL import Image

    from steinebm.reproduction.reproduce_joint import mnist_joint

    digits = [data.test.x[data.test.y == k][:20].numpy().reshape(20, 28, 28) for k in range(10)]
    tiles = np.concatenate([np.concatenate(list(row), axis=1) for row in digits], axis=0)  # 280 x 560
    theirs = tmp_path / "theirs.png"
    Image.fromarray((tiles * 255).round().astype(np.uint8)).save(theirs)
    summary = mnist_joint(out=tmp_path / "joint", **SMALL_JOINT, authors_grid=theirs, duplicates=(20, 10))
    rows = summary["rows"]
    assert list(rows) == [
        "SteinGAN",
        "SteinGAN without kernel",
        "DCGAN",
        "real training images",
        "20 real images x 10",
        "the authors' grid",
    ]
    for name in ("SteinGAN", "DCGAN", "real training images"):
        assert 0.0 <= rows[name]["transfer_ResNet-8"] <= 1.0 and rows[name]["mnist_fid"] >= 0.0
    # real digits arranged a row per class: each classifier reads nearly all of them as their row
    assert rows["the authors' grid"]["grid_mnist_label_agreement"] > 0.95
    assert rows["real training images"]["mnist-lenet_label_agreement"] > 0.95
    with Image.open(tmp_path / "joint" / rows["SteinGAN"]["grid"]) as im:
        assert im.size == (20 * 28, 10 * 28)  # as the authors drew theirs
    # theirs, redrawn beside ours, is their picture pixel for pixel
    with Image.open(tmp_path / "joint" / rows["the authors' grid"]["grid"]) as im, Image.open(theirs) as orig:
        assert np.array_equal(np.asarray(im.convert("L")), np.asarray(orig))
    md = (tmp_path / "joint" / "mnist-joint.md").read_text()
    assert "| SteinGAN | " in md and [c["claim"] for c in summary["claims"]] == [
        "SteinGAN's inception score reaches 9",
        "a classifier trained on SteinGAN's images beats one trained on DCGAN's",
    ]


def test_reproduce_mnist_joint_resumes_its_scoring_where_it_stopped(tmp_path, data, monkeypatch):
    """A command stopped during its hours of judging, run again, takes only the measures still
    missing: each ResNet training (the costly measure) is saved as soon as it is done."""
    from steinebm.reproduction import reproduce_joint as J

    kw = dict(out=tmp_path / "joint", **SMALL_JOINT, duplicates=(10, 10))
    real_transfer, calls = J._transfer, []
    # before any run is trained, --no-train judges the real images only (2 sets x 2 depths)
    monkeypatch.setattr(J, "_transfer", lambda *a, **k: calls.append(a[3]) or real_transfer(*a, **k))
    early = J.mnist_joint(**kw, train=False)
    assert calls == [1, 3, 1, 3] and not (tmp_path / "joint" / "steingan").exists()
    assert all(early["rows"][name] == {"not_finished": True} for name in J.JOINT_RUNS)
    assert "| DCGAN | not finished |" in (tmp_path / "joint" / "mnist-joint.md").read_text()
    calls.clear()

    def stops_at_the_fourth(*a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(a[3])  # blocks per stage
        return real_transfer(*a, **k)

    monkeypatch.setattr(J, "_transfer", stops_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        J.mnist_joint(**kw)
    assert calls == [1, 3, 1]  # SteinGAN's two depths, then one of the second set's
    # 5 image sets x 2 depths in all, 4 taken before and 3 now: the next call trains the other 3
    rest: list[int] = []
    monkeypatch.setattr(J, "_transfer", lambda *a, **k: rest.append(a[3]) or real_transfer(*a, **k))
    first = J.mnist_joint(**kw)
    assert rest == [3, 1, 3]
    assert first["rows"]["real training images"] == early["rows"]["real training images"]
    monkeypatch.setattr(J, "_transfer", lambda *a, **k: pytest.fail("measured again"))
    # every measure saved: a generator draws its grid and not the images the measures were taken on
    real_images, drawn = J.conditional_images, []
    monkeypatch.setattr(J, "conditional_images", lambda G, y, **k: drawn.append(len(y)) or real_images(G, y, **k))
    assert J.mnist_joint(**kw)["rows"] == first["rows"]
    assert drawn == [J.GRID_ROWS * J.GRID_COLS] * 3
    monkeypatch.setattr(J, "conditional_images", real_images)
    # another training length for the networks: only their 10 trainings are taken again
    import steinebm.evaluation.sample_scores as S

    more: list[int] = []
    monkeypatch.setattr(J, "_transfer", lambda *a, **k: more.append(a[3]) or 0.5)
    monkeypatch.setattr(S, "classifier_fid", lambda *a, **k: pytest.fail("FID taken again"))
    J.mnist_joint(**{**kw, "transfer_epochs": 2})
    assert len(more) == 10
    # a run trained again (to the same step): its images are new, every measure of it is retaken
    import shutil

    shutil.rmtree(tmp_path / "joint" / "dcgan")
    fids: list[str] = []
    monkeypatch.setattr(S, "classifier_fid", lambda *a, **k: fids.append(a[2]) or 1.0)
    more.clear()
    rows = J.mnist_joint(**{**kw, "transfer_epochs": 2})["rows"]
    assert len(more) == 2 and fids == ["mnist", "mnist-lenet"]
    assert rows["DCGAN"]["mnist_fid"] == 1.0 and rows["SteinGAN"]["mnist_fid"] == first["rows"]["SteinGAN"]["mnist_fid"]


def test_head_dropout_reaches_the_cifar_joint_energy_too():
    cfg = Config(method="steingan", model="joint", dataset="cifar10", width=8, code_dim=8, head_dropout=0.5)
    assert B.build_model(cfg, 3072, image_shape=(3, 32, 32)).head_dropout == 0.5


def test_batch_mode_codes_drop_out_the_input_as_the_energy_does():
    from steinebm.engine.build import _feature_codes

    f = JointAutoencoderEnergy.mnist(width=4, code_dim=8, input_dropout=0.3)
    x = torch.rand(10, 784)
    codes = _feature_codes(f, "batch")
    torch.manual_seed(3)
    a = codes(x)
    torch.manual_seed(3)
    f.train()
    keep = torch.nn.functional.dropout(x.reshape(10, 1, 28, 28), 0.3, training=True)
    torch.testing.assert_close(a, f.encoder(keep))  # the same mask as the energy's own pass draws
    assert not torch.equal(codes(x), a)  # another draw, another mask
    f.eval()
    torch.testing.assert_close(_feature_codes(f, "eval")(x), f.encoder(x.reshape(10, 1, 28, 28)))


def test_reproduce_mnist_joint_judges_sets_in_parallel_as_in_one_process(tmp_path, data):
    """With jobs > 1 the image sets are judged in worker processes, one torch thread each; at one
    thread here too, every measure of every set comes out the same, bit for bit."""
    import shutil

    from steinebm.reproduction.reproduce_joint import mnist_joint

    kw = dict(SMALL_JOINT, duplicates=(10, 10))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = mnist_joint(out=tmp_path / "a", **kw)["rows"]
    finally:
        torch.set_num_threads(threads)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "scores")  # nothing saved: every measure taken afresh
    (tmp_path / "b" / "mnist-joint-steingan.png").unlink()
    together = mnist_joint(out=tmp_path / "b", **{**kw, "jobs": 2}, train=False)["rows"]
    assert list(together) == list(alone) and together == alone
    assert (tmp_path / "b" / "mnist-joint-steingan.png").exists()
    saved = sorted(p.name for p in (tmp_path / "b" / "scores").iterdir())
    assert saved == [
        "10-real-images-x-10.json",
        "dcgan.json",
        "real-training-images.json",
        "steingan-without-kernel.json",
        "steingan.json",
    ]
