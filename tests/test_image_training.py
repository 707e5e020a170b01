"""The natural-image path end to end on a tiny in-memory CIFAR-shaped dataset: every generator
method for 2 steps, the joint energy's labels, the conditional generator's label counts, class
rows in sample grids, and the latent random walk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from steinebm.cli import main
from steinebm.data import Dataset, Split
from steinebm.engine import build as B
from steinebm.engine import train as T
from steinebm.engine.config import Config
from steinebm.errors import ConfigError
from steinebm.learners.steingan import SteinGAN
from steinebm.models.common import draw_samples, latent_walk

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(width=8, gen_width=8, disc_width=8, code_dim=8, batch_size=8, progress=False, log_every=1, threads=1)


def _images(n: int, side: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3 * side * side, generator=g)
    y = torch.arange(n) % 10
    return Split(x, y)


def _data(side: int = 32, n: int = 40) -> Dataset:
    # classes 0..9 with 0 and 1 twice as frequent: the label counts the generator must learn
    tr = _images(n, side, 0)
    tr.y = torch.cat(
        [torch.arange(10), torch.arange(10), torch.zeros(10, dtype=torch.long), torch.ones(10, dtype=torch.long)]
    )[:n]
    return Dataset("tiny", tr, _images(10, side, 1), _images(10, side, 2), (3, side, side), "memory")


CASES = {
    "steingan-joint-feature": dict(
        method="steingan", model="joint", gen_kernel="feature", gamma=0.7, gamma_adaptive=0.9
    ),
    "steingan-autoencoder-rbf": dict(method="steingan", model="autoencoder", gen_kernel="rbf"),
    "steingan-autoencoder-no-kernel": dict(method="steingan", model="autoencoder", gen_kernel="constant"),
    "dcgan": dict(method="dcgan"),
    "dcgan-conditional": dict(method="dcgan", conditional=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_steps_on_32px_images(case, tmp_path, generator_by_hand):
    data = _data()
    cfg = Config(dataset="cifar10", out_dir=str(tmp_path / case), max_steps=2, **TINY, **CASES[case])
    rec = T.train(cfg, dataset=data)
    assert rec["step"] == 2
    ck = T.load_checkpoint(cfg.out_dir)
    assert ck["image_shape"] == [3, 32, 32] or tuple(ck["image_shape"]) == (3, 32, 32)
    G = B.load_generator(cfg.out_dir)
    x, _ = draw_samples(G, 10, torch.Generator().manual_seed(0))
    assert x.shape[1:] == (3, 32, 32)
    # the trained generator in evaluation mode, written out from the checkpoint's tensors, on
    # xi ~ U(-1, 1)^noise_dim drawn by hand from the same seed (and labels 0..9 for a conditional one)
    xi = torch.rand(10, cfg.noise_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.arange(10) if case in ("steingan-joint-feature", "dcgan-conditional") else None
    torch.testing.assert_close(x, generator_by_hand(ck["generator"], xi, y), rtol=1e-5, atol=1e-6)
    model = B.load(cfg.out_dir)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_64px_autoencoder_and_a_generator_for_its_frozen_energy(tmp_path):
    data = _data(side=64, n=16)
    first = Config(
        dataset="celeba",
        out_dir=str(tmp_path / "ae64"),
        max_steps=2,
        method="steingan",
        model="autoencoder",
        gen_kernel="feature",
        **TINY,
    )
    T.train(first, dataset=data)
    frozen = Config(
        dataset="celeba",
        out_dir=str(tmp_path / "gen"),
        max_steps=2,
        method="amortized-svgd",
        model="autoencoder",
        gen_kernel="feature",
        energy_from=first.out_dir,
        **TINY,
    )
    T.train(frozen, dataset=data)
    a, b = B.load(first.out_dir).state_dict(), B.load(frozen.out_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if "running" not in k and "num_batches" not in k)


def test_joint_energy_step_pairs_each_real_image_with_its_label(tmp_path, monkeypatch):
    data = _data()
    seen = []
    real = SteinGAN.energy_loss

    def spy(self, energy, x_pos, x_gen, steincd, energy_gen=None):
        seen.append((x_pos.clone(), torch.cat([energy.y, energy_gen.y]), x_gen.shape[0]))
        return real(self, energy, x_pos, x_gen, steincd, energy_gen)

    monkeypatch.setattr(SteinGAN, "energy_loss", spy)
    cfg = Config(
        dataset="cifar10",
        out_dir=str(tmp_path / "j"),
        max_steps=2,
        method="steingan",
        model="joint",
        gen_kernel="rbf",
        **TINY,
    )
    T.train(cfg, dataset=data)
    for x_pos, y, m in seen:
        # find each real image in the training set by its pixels: its label must come first, in order
        idx = [int(torch.nonzero((data.train.x == row).all(1))[0]) for row in x_pos]
        assert torch.equal(y[: len(idx)], data.train.y[idx])
        assert len(y) == len(idx) + m and bool(((y >= 0) & (y < 10)).all())


def test_conditional_generator_draws_labels_as_often_as_the_data(tmp_path):
    data = _data()
    cfg = Config(
        dataset="cifar10",
        out_dir=str(tmp_path / "c"),
        max_steps=1,
        method="steingan",
        model="joint",
        gen_kernel="constant",
        **TINY,
    )
    T.train(cfg, dataset=data)
    G = B.load_generator(cfg.out_dir)
    counts = np.bincount(data.train.y.numpy(), minlength=10)
    torch.testing.assert_close(G.class_probs.double(), torch.tensor(counts / counts.sum()), rtol=1e-6, atol=1e-7)
    y = G.sample_labels(20_000, torch.Generator().manual_seed(0))
    freq = np.bincount(y.numpy(), minlength=10) / 20_000
    assert np.abs(freq - counts / counts.sum()).max() < 0.02
    # a resume keeps them (they are part of the saved generator)
    cfg.max_steps = 2
    T.train(cfg, resume=True, dataset=_data())
    torch.testing.assert_close(B.load_generator(cfg.out_dir).class_probs, G.class_probs)


class _LabelPainter(nn.Module):
    """A stand-in conditional generator: every pixel of image k equals its label / 10."""

    n_classes, noise_dim = 10, 3

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, xi, y):
        return (y.float() / 10).view(-1, 1, 1, 1).expand(len(y), 3, 4, 4) + 0 * self.w


def test_conditional_grid_has_one_class_per_row():
    x, nrow = draw_samples(_LabelPainter(), 30, torch.Generator().manual_seed(0))
    assert nrow == 3 and x.shape[0] == 30
    rows = x[:, 0, 0, 0].view(10, 3)
    assert torch.allclose(rows, (torch.arange(10).float() / 10).view(10, 1).expand(10, 3))


def test_latent_walk_moves_smoothly_and_writes_strip_and_gif(tmp_path):
    data = _data()
    cfg = Config(dataset="cifar10", out_dir=str(tmp_path / "w"), max_steps=1, method="dcgan", **TINY)
    T.train(cfg, dataset=data)
    G = B.load_generator(cfg.out_dir)
    frames = latent_walk(G, 12, 0.01, n_chains=2, generator=torch.Generator().manual_seed(0))
    assert frames.shape == (12, 2, 3, 32, 32)
    step = (frames[1:] - frames[:-1]).abs().mean()
    apart = (frames[:, 0] - frames[:, 1]).abs().mean()  # two independent chains
    assert step < 0.2 * apart
    assert main(["sample", cfg.out_dir, "--walk", "12", "--n", "2", "--out", str(tmp_path / "walk.png")]) == 0
    png, gif = Image.open(tmp_path / "walk.png"), Image.open(tmp_path / "walk.gif")
    assert gif.n_frames == 12
    tile = 2 * (32 + 2)  # scale 2, pad 2
    assert png.size == (2 * 2 + 12 * tile, 2 * 2 + 2 * tile)


def test_sample_grid_of_a_conditional_run_has_a_row_per_class(tmp_path):
    cfg = Config(
        dataset="cifar10",
        out_dir=str(tmp_path / "g"),
        max_steps=1,
        method="steingan",
        model="joint",
        gen_kernel="constant",
        **TINY,
    )
    T.train(cfg, dataset=_data())
    out = tmp_path / "grid.png"
    assert main(["sample", cfg.out_dir, "--n", "40", "--out", str(out)]) == 0
    w, h = Image.open(out).size
    assert (w, h) == (2 * (2 + 4 * 34), 2 * (2 + 10 * 34))  # 4 per row, 10 rows


@pytest.mark.parametrize(
    "kw, key",
    [
        (dict(model="rbm", gen_kernel="feature", method="steingan"), "gen_kernel"),
        (dict(model="joint", method="steincd"), "model"),
        (dict(model="joint", method="steingan", alpha=0.5), "model"),
        (dict(image_size=48), "image_size"),
        (dict(width=-1), "width"),
        (dict(conditional=True, method="steingan"), "conditional"),
    ],
)
def test_bad_image_settings_are_refused(kw, key):
    with pytest.raises(ConfigError, match=key):
        Config(**kw).validate()


def test_an_image_shape_the_networks_do_not_take_is_a_clear_error(tmp_path):
    from steinebm.errors import UserError

    odd = Dataset("odd", _images(16, 32, 0), _images(4, 32, 1), _images(4, 32, 2), (3, 16, 64), "memory")
    with pytest.raises(UserError, match="32 / 64 px"):
        T.train(
            Config(dataset="cifar10", out_dir=str(tmp_path / "o"), method="dcgan", max_steps=1, **TINY), dataset=odd
        )


def test_conditional_discriminator_reads_the_label_planes():
    from steinebm.models.common import count_parameters
    from steinebm.models.dcgan_nets import ConditionalDCGANDiscriminator, DCGANDiscriminator

    g = torch.Generator().manual_seed(0)
    D = ConditionalDCGANDiscriminator(32, 3, 10, ndf=8, generator=g).eval()
    x = torch.rand(4, 3 * 32 * 32, generator=g)
    a, b = D(x, torch.tensor([0, 1, 2, 3])), D(x, torch.tensor([5, 1, 9, 3]))
    assert a[1] == b[1] and a[3] == b[3] and a[0] != b[0] and a[2] != b[2]  # only the changed labels move
    # the same network as an unconditional one on 3 + 10 planes, fed the planes by hand
    U = DCGANDiscriminator(32, 13, ndf=8)
    U.load_state_dict(D.state_dict())
    U.eval()
    planes = torch.zeros(4, 10, 32, 32)
    planes[torch.arange(4), torch.tensor([0, 1, 2, 3])] = 1.0
    torch.testing.assert_close(U(torch.cat([x.view(4, 3, 32, 32), planes], 1)), a)
    assert count_parameters(D) == count_parameters(U)


def test_every_shipped_config_loads_and_validates():
    from steinebm.engine.config_file import load_config

    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(configs) >= 10
    for path in configs:
        load_config(path).validate()


def test_celeba_config_trains_on_a_folder_of_faces(tmp_path):
    """The Figure 3 config, shrunk, for 2 steps on 12 aligned-face-sized JPEGs the test writes."""
    from steinebm.engine.config_file import load_config

    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    g = np.random.default_rng(0)
    for k in range(12):
        Image.fromarray(g.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / f"{k + 1:06d}.jpg")
    cfg = load_config(
        ROOT / "configs" / "fig3-steingan-celeba.yaml",
        [
            f"data_dir={tmp_path}",
            "device=cpu",
            "max_steps=2",
            "width=8",
            "gen_width=8",
            "code_dim=8",
            "batch_size=4",
            "progress=false",
            f"out_dir={tmp_path / 'run'}",
        ],
    )
    rec = T.train(cfg)
    assert rec["step"] == 2
    assert tuple(T.load_checkpoint(cfg.out_dir)["image_shape"]) == (3, 64, 64)


def test_amp_runs_the_networks_in_bfloat16_and_the_rest_in_float32(tmp_path):
    cfg = Config(
        dataset="cifar10", out_dir="unused", method="steingan", model="joint", gen_kernel="feature", amp=True, **TINY
    ).validate()
    parts = T.build_parts(cfg, 3072, torch.device("cpu"), image_shape=(3, 32, 32))
    seen: dict[str, list] = {"generator": [], "decoder": []}
    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    for name, root in (("generator", parts.modules["generator"]), ("decoder", parts.modules["model"].decoder)):
        for sub in root.modules():
            if isinstance(sub, layers):
                sub.register_forward_hook(lambda m, i, o, name=name: seen[name].append(o.dtype))
    x = torch.rand(8, 3072, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    loss, stats = parts.step(x, torch.Generator().manual_seed(1), y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # the generator and the energy's forward ran in bfloat16 (the feature kernel's codes do not:
    # it calls encode, outside the energy's forward, and keeps float32)
    assert seen["generator"] and all(d == torch.bfloat16 for d in seen["generator"])
    assert seen["decoder"] and all(d == torch.bfloat16 for d in seen["decoder"])
    assert parts.modules["model"](x, y).dtype == torch.float32
    assert all(p.dtype == torch.float32 for m in parts.modules.values() for p in m.parameters())
    off = Config(**{**cfg.__dict__, "amp": False}).validate()
    plain = T.build_parts(off, 3072, torch.device("cpu"), image_shape=(3, 32, 32))
    assert plain.modules["generator"](*plain.modules["generator"].sample_noise(2)).dtype == torch.float32


def test_amp_agrees_with_float32_to_bfloat16_rounding():
    """The same autoencoder energy and generator with and without amp: the energy's values on
    images, the generator's images from the same noise and both losses of a SteinGAN step agree
    to bfloat16's rounding (u = 2^-8 relative, the spacing of its 8 significant bits; the
    generator's pixels, its loss and its phi go through more bfloat16 layers, so 4 u), come back
    in float32, and are not float32's bit for bit (bfloat16 was used). When written, the energy
    differed by 6e-5 relative, its loss by 1.4e-6, the pixels by 2.6e-3 and the generator's loss
    by 4.8e-3 relative."""
    u = 2.0**-8
    out = {}
    for amp in (False, True):
        cfg = Config(
            dataset="cifar10", out_dir="unused", method="steingan", model="autoencoder", gamma=0.5, amp=amp, **TINY
        ).validate()
        parts = T.build_parts(cfg, 3072, torch.device("cpu"), image_shape=(3, 32, 32))
        x = torch.rand(8, 3072, generator=torch.Generator().manual_seed(0))
        xi = torch.rand(8, cfg.noise_dim, generator=torch.Generator().manual_seed(1)) * 2 - 1
        with torch.no_grad():
            f, images = parts.modules["model"](x), parts.modules["generator"](xi)
        loss, stats = parts.step(x, torch.Generator().manual_seed(2))
        out[amp] = (f, images, float(loss.detach()), stats["g_loss"])
    (f32, img32, e32, g32), (f16, img16, e16, g16) = out[False], out[True]
    assert f16.dtype == img16.dtype == torch.float32
    torch.testing.assert_close(f16, f32, rtol=u, atol=0)
    torch.testing.assert_close(img16, img32, rtol=0, atol=4 * u)  # pixels in [0, 1]
    assert e16 == pytest.approx(e32, rel=u) and g16 == pytest.approx(g32, rel=4 * u)
    assert not torch.equal(f16, f32) and not torch.equal(img16, img32)


def test_feature_codes_modes_and_running_statistics():
    """feature_codes=batch uses the batch's statistics without moving the running ones; eval
    uses the running ones; both leave the model's own mode as it was."""
    from steinebm.engine.build import _feature_codes

    cfg = Config(dataset="cifar10", out_dir="unused", method="steingan", model="autoencoder", **TINY).validate()
    model = B.build_model(cfg, 3072, torch.Generator().manual_seed(0), (3, 32, 32))
    x = torch.rand(8, 3072, generator=torch.Generator().manual_seed(1)) * 3.0  # far from the init statistics
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.train()
    with torch.no_grad():
        batch_codes = _feature_codes(model, "batch")(x)
        eval_codes = _feature_codes(model, "eval")(x)
    assert model.training
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(eval_codes, model.encode(x))
        model.train()
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.momentum = 0.0
        torch.testing.assert_close(batch_codes, model.encode(x))
    assert not torch.allclose(batch_codes, eval_codes)
