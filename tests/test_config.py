import dataclasses
from pathlib import Path

import pytest
import torch

from steinebm.engine.config import Config
from steinebm.engine.config_file import load_config
from steinebm.errors import ConfigError


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("method: cd\ncd_k: 10\nlr: 3e-4\nlangevin_step: 0.1\n")
    cfg = load_config(p, ["seed=3", "gamma_adaptive=0.9", "out_dir=runs/x", "log_term=m+1"])
    assert (cfg.method, cfg.cd_k, cfg.lr, cfg.langevin_step, cfg.seed) == ("cd", 10, 3e-4, 0.1, 3)
    assert cfg.gamma_adaptive == 0.9 and cfg.out_dir == "runs/x" and cfg.log_term == "m+1"
    assert isinstance(cfg.lr, float)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("alpha=1.5", "alpha"),
        ("alpha=-0.1", "alpha"),
        ("gamma=1.0", "gamma"),
        ("gamma=0.5", None),
        ("epsilon=0", "epsilon"),
        ("lr=nan", "lr"),
        ("lr=inf", "lr"),
        ("batch_size=0", "batch_size"),
        ("batch_size=1.5", "integer"),
        ("n_hidden=5000", "AIS"),
        ("bandwidth=-1", "bandwidth"),
        ("bandwidth=2.5", None),
        ("kernel=laplace", "kernel"),
        ("method=amortized-svgd", "energy_from"),
        ("device=tpu", "device"),
        ("progress=maybe", "true or false"),
        ("lrr=0.1", "did you mean 'lr'"),
    ],
)
def test_range_checks(override, needle):
    if needle is None:
        load_config(None, [override])
        return
    with pytest.raises(ConfigError, match=needle):
        load_config(None, [override])


def test_defaults_are_the_authors():
    c = Config().validate()
    assert (c.n_hidden, c.batch_size, c.epochs, c.lr, c.beta1) == (10, 100, 20, 3e-4, 0.5)


NAN, INF = float("nan"), float("inf")

# (key, a bad value, words the message must hold, other keys the case needs). Every field has at
# least one row (test_every_field_has_a_bad_value checks that against the dataclass).
BAD: list[tuple[str, object, str, dict]] = [
    ("method", "svgd", "choose one of", {}),
    ("method", None, "a string", {}),
    ("dataset", "imagenet", "choose one of", {}),
    ("image_size", 48, "32 or 64", {}),
    ("image_size", 32.0, "an integer", {}),
    ("max_images", -1, ">= 0", {}),
    ("data_dir", 3, "a path or null", {}),
    ("data_dir", "a\0b", "NUL", {}),
    ("data_fingerprint", 5, "64 hex digits or null", {}),
    ("data_fingerprint", "abc", "64 hex digits", {}),
    ("data_fingerprint", "A" * 64, "64 hex digits", {}),  # upper case: not what fingerprint() writes
    ("out_dir", "  ", "a folder", {}),
    ("out_dir", None, "a string", {}),
    ("seed", -1, "[0, 2**32)", {}),
    ("seed", 2**32, "[0, 2**32)", {}),
    ("seed", True, "an integer", {}),
    ("model", "mlp", "choose one of", {}),
    ("n_hidden", 0, ">= 1", {}),
    ("n_hidden", 5000, "AIS", {}),
    ("n_hidden", "10", "an integer", {}),
    ("code_dim", 0, ">= 1", {}),
    ("margin", NAN, "finite", {}),
    ("margin", INF, "finite", {}),
    ("margin", "1", "a number", {}),
    ("conditional", 1, "true or false", {}),
    ("conditional", True, "DCGAN", {}),
    ("width", -1, ">= 0", {}),
    ("gen_width", -8, ">= 0", {}),
    ("disc_width", 2.5, "an integer", {}),
    ("epochs", 0, ">= 1", {}),
    ("epochs", INF, "an integer", {}),
    ("batch_size", 0, ">= 1", {}),
    ("batch_size", 1, "2 particles", {}),
    ("lr", 0.0, "> 0", {}),
    ("lr", -1e-3, "> 0", {}),
    ("lr", NAN, "finite", {}),
    ("lr", INF, "finite", {}),
    ("lr", None, "a number", {}),
    ("lr", False, "a number", {}),
    ("beta1", 1.0, "[0, 1)", {}),
    ("beta1", NAN, "[0, 1)", {}),
    ("beta2", -0.1, "[0, 1)", {}),
    ("weight_decay", -1e-4, ">= 0", {}),
    ("weight_decay", INF, "finite", {}),
    ("cd_k", 0, ">= 1", {}),
    ("langevin_step", 0.0, "> 0", {}),
    ("langevin_noise", -1.0, ">= 0", {}),
    ("langevin_noise", NAN, ">= 0", {}),
    ("epsilon", 0.0, "> 0", {}),
    ("epsilon", NAN, "> 0", {}),
    ("kernel", "laplace", "choose one of", {}),
    ("bandwidth", -1.0, "'median' or a finite number > 0", {}),
    ("bandwidth", NAN, "'median' or a finite number > 0", {}),
    ("bandwidth", "auto", "'median' or a finite number > 0", {}),
    ("bandwidth", True, "'median' or a finite number > 0", {}),
    ("median_over", "some", "choose one of", {}),
    ("log_term", "m+2", "choose one of", {}),
    ("normalize", "n", "choose one of", {}),
    ("median_of", "mean", "choose one of", {}),
    ("gen_loss", "max", "choose one of", {}),
    ("gen_bias", "no", "true or false", {}),
    ("gen_batchnorm", "none", "choose one of", {}),
    ("gen_bn_stats", "frozen", "choose one of", {}),
    ("gen_bn_eps", 0.0, "(0, 1)", {}),
    ("gen_bn_eps", NAN, "(0, 1)", {}),
    ("sm_probes", -1, ">= 0", {}),
    ("noise_dim", 0, ">= 1", {}),
    ("gen_lr", 0.0, "> 0", {}),
    ("gen_lr", INF, "finite", {}),
    ("gen_beta1", 1.5, "[0, 1)", {}),
    ("gen_weight_decay", -1.0, ">= 0", {}),
    ("gen_kernel", "laplace", "choose one of", {}),
    ("gen_kernel", "feature", "encoder", {}),  # the RBM has no encoder
    ("feature_repulsion", "approx", "choose one of", {}),
    ("feature_codes", "train", "choose one of", {}),
    ("gamma", 1.0, "[0, 1)", {}),
    ("gamma", -0.1, "[0, 1)", {}),
    ("gamma", NAN, "[0, 1)", {}),
    ("gamma_adaptive", 1.0, "[gamma, 1)", {}),
    ("gamma_adaptive", 0.3, "[gamma, 1)", {"gamma": 0.5}),
    ("gamma_adaptive", NAN, "[gamma, 1)", {}),
    ("gamma_adaptive", "high", "a number or null", {}),
    ("gamma_raise_when", "always", "choose one of", {}),
    ("input_dropout", 1.0, "[0, 1)", {}),
    ("head_dropout", -0.1, "[0, 1)", {}),
    ("feature_bandwidth", "wide", "choose one of", {}),
    ("schedule", "random", "choose one of", {}),
    ("schedule", "alternate", "method=steingan", {}),  # the default method is steincd
    ("skip_margin", INF, "null or a finite number", {}),
    ("skip_margin", "big", "a number or null", {}),
    ("energy_lr_boost", 0.0, "> 0", {}),
    ("energy_lr_boost", NAN, "> 0", {}),
    ("gen_labels", "real", "choose one of", {}),
    ("gen_labels", "batch", "class-conditional", {"method": "steingan"}),
    ("lr_decay_from", -1, ">= 0", {}),
    ("lr_decay_from", 2.5, "an integer or null", {}),
    ("alpha", 1.5, "[0, 1]", {}),
    ("alpha", -0.1, "[0, 1]", {}),
    ("alpha", NAN, "[0, 1]", {}),
    ("steincd_optimizer", "mine", "choose one of", {}),
    ("energy_from", None, "energy model", {"method": "amortized-svgd"}),
    ("energy_from", 5, "a path or null", {}),
    ("n_train", -1, ">= 0", {}),
    ("eval_samples", 5, ">= 10 with a method that trains a generator", {"method": "steingan"}),
    ("eval_samples", 100, ">= 10 with a method that trains a generator", {}),
    ("eval_every", -1, ">= 0", {}),
    ("checkpoint_every", -5, ">= 0", {}),
    ("checkpoint_every", 0.5, "an integer", {}),
    ("log_every", 0, ">= 1", {}),
    ("max_steps", -1, ">= 0", {}),
    ("threads", -2, ">= 0", {}),
    ("device", "tpu", "cuda:N", {}),
    ("device", "cuda:x", "cuda:N", {}),
    ("amp", "yes", "true or false", {}),
    ("flush_denormal", 1, "true or false", {}),
    ("amp", True, "SteinCD", {}),  # steincd, the default method
    ("amp", True, "SteinCD", {"method": "symmetric-steincd"}),
    ("amp", True, "SteinCD", {"method": "steingan", "alpha": 0.5}),
    ("progress", None, "true or false", {}),
    ("on_divergence", "retry", "choose one of", {}),
    ("adam_impl", "lbfgs", "choose one of", {}),
    ("rollback_lr_factor", 1.0, "(0, 1)", {}),
    ("rollback_lr_factor", 0.0, "(0, 1)", {}),
    ("rollback_lr_factor", NAN, "(0, 1)", {}),
    ("max_rollbacks", 0, ">= 1", {}),
    ("diverge_growth", 1.0, "0 (off) or a finite number > 1", {}),
    ("diverge_growth", INF, "0 (off) or a finite number > 1", {}),
    ("diverge_growth", -5.0, "0 (off) or a finite number > 1", {}),
    ("max_rollbacks", 2.0, "an integer", {}),
    ("tensorboard", "true", "true or false", {}),
    ("tensorboard", 1, "true or false", {}),
    ("extra", [1, 2], "a mapping", {}),
    ("extra", {1: "a"}, "string keys", {}),
]


def test_every_field_has_a_bad_value():
    fields = {f.name for f in dataclasses.fields(Config)}
    assert fields - {row[0] for row in BAD} == set()


@pytest.mark.parametrize("key, value, needle, context", BAD, ids=[f"{r[0]}={r[1]!r}" for r in BAD])
def test_bad_value_is_a_one_line_error_naming_the_key(key, value, needle, context):
    cfg = Config(**context)
    setattr(cfg, key, value)  # as a config built in Python: from_dict's type checks are bypassed
    with pytest.raises(ConfigError) as exc:
        cfg.validate()
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"config value {key}=")
    assert needle in msg


# the same through the command line's key=value path (YAML values)
OVERRIDES = [
    ("seed=-1", "seed"),
    ("lr=.nan", "lr"),
    ("lr=abc", "lr"),
    ("epochs=1e3", "epochs"),
    ("epochs=true", "epochs"),
    ("beta2=1", "beta2"),
    ("progress=1", "progress"),
    ("tensorboard=yes please", "tensorboard"),
    ("on_divergence=rollback", None),
    ("on_divergence=undo", "on_divergence"),
    ("rollback_lr_factor=2", "rollback_lr_factor"),
    ("max_rollbacks=-1", "max_rollbacks"),
    ("extra=[1]", "extra"),
    ("gamma_adaptive=null", None),
    ("data_dir=null", None),
    ("device=cuda:1", None),
    ("max_rolbacks=2", "did you mean 'max_rollbacks'"),
]


@pytest.mark.parametrize("override, key", OVERRIDES)
def test_overrides_are_checked_on_one_line(override, key):
    if key is None:
        load_config(None, [override])
        return
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    assert key in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "values",
    [
        {"alpha": 0.0},
        {"alpha": 1.0},
        {"gamma": 0.0, "gamma_adaptive": 0.0},
        {"beta1": 0.0},
        {"rollback_lr_factor": 0.999, "max_rollbacks": 1, "on_divergence": "rollback"},
        {"seed": 2**32 - 1},
        {"lr": 1},  # an int where a float belongs is a number
        {"bandwidth": 2},
        {"tensorboard": True},
        {"extra": {"note": [1, 2]}},
        {"device": "cuda:0"},
        {"amp": True, "method": "cd"},
        {"amp": True, "method": "stein-score-matching"},
        {"amp": True, "method": "steingan", "alpha": 0.0},
    ],
)
def test_edge_values_are_accepted(values):
    Config(**values).validate()


def test_presets_ship_inside_the_package_and_load_by_name_from_any_folder(tmp_path, monkeypatch):
    import steinebm
    from steinebm.engine.config_file import PRESETS, preset_path, presets

    assert PRESETS.parent == Path(steinebm.__file__).parent  # installed with the package
    names = presets()
    assert {"fig1a-steincd", "fig1-steingan", "fig1-steingan-authors", "mnist-joint-steingan"} <= set(names)
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    for name in names:
        by_name = load_config(name, ["dataset=mnist-embedded"])
        by_file = load_config(PRESETS / f"{name}.yaml", ["dataset=mnist-embedded"])
        assert by_name == by_file
        assert preset_path(f"{name}.yaml") == PRESETS / f"{name}.yaml"
    with pytest.raises(ConfigError, match="no config file or preset 'fig9'.*fig1a-steincd"):
        load_config("fig9")


# --- the settings each rule reads ------------------------------------------------------------------

# a valid value other than the default for every key a rule might leave unread
OTHER_VALUE = dict(
    image_size=32, max_images=5, model="autoencoder", n_hidden=7, code_dim=8, margin=0.5, conditional=True,
    width=8, gen_width=8, disc_width=8, cd_k=3, langevin_step=0.05, langevin_noise=0.5, epsilon=0.2,
    kernel="imq", bandwidth=1.5, median_over="all", log_term="m+1", median_of="squared", normalize="kernel_sum",
    sm_probes=3, noise_dim=7, gen_lr=1e-2, gen_beta1=0.9, gen_weight_decay=0.1, gen_loss="sum", gen_bias=False,
    gen_batchnorm="plain", gen_bn_stats="batch", gen_bn_eps=1e-3, gen_kernel="constant", feature_repulsion="none",
    feature_bandwidth="authors-mnist", feature_codes="batch", gamma=0.5, gamma_adaptive=0.8,
    gamma_raise_when="real_energy_lower", input_dropout=0.3, head_dropout=0.3, schedule="alternate",
    skip_margin=0.1, energy_lr_boost=3.0, gen_labels="batch", alpha=0.5, steincd_optimizer="own",
    energy_from="another/run", eval_samples=20,
)  # fmt: skip


@pytest.fixture(scope="module")
def energy_run(tmp_path_factory):
    """A trained RBM for amortized SVGD to sample."""
    from steinebm.engine.train import train

    out = tmp_path_factory.mktemp("energy") / "run"
    cfg = Config(
        dataset="mnist-embedded", n_train=40, batch_size=10, n_hidden=3, max_steps=1, progress=False, out_dir=str(out)
    )
    train(cfg.validate())
    return str(out)


def _after_one_step(cfg: Config, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    from steinebm.engine.build import build_parts

    parts = build_parts(cfg, x.shape[1], torch.device("cpu"), image_shape=(1, 28, 28))
    torch.manual_seed(5)  # the energy's dropout
    parts.step(x, torch.Generator().manual_seed(3), y)
    return [t.detach().clone() for mod in parts.modules.values() for t in mod.state_dict().values()]


@pytest.mark.parametrize(
    "method, keys",
    [
        ("cd", {}),
        ("steincd", {}),
        ("symmetric-steincd", {}),
        ("stein-score-matching", {}),
        ("score-matching", {}),
        ("steingan", {}),
        ("steingan", {"alpha": 0.5, "gamma_adaptive": 0.5}),
        ("steingan", {"model": "joint", "gen_kernel": "feature", "code_dim": 16, "width": 8}),
        ("steingan", {"model": "joint", "schedule": "alternate", "code_dim": 16, "width": 8, "gen_labels": "batch"}),
        ("amortized-svgd", {}),
        ("dcgan", {}),
    ],
)
def test_a_key_a_rule_does_not_read_changes_nothing_it_trains(method, keys, energy_run):
    """For each key the rule is said not to read, the key is set to another valid value: one step
    from the same seeds must leave every parameter and buffer bit-identical. (A combination the
    config refuses is skipped: it cannot be set by mistake.)"""
    from steinebm.data import load_dataset
    from steinebm.engine.settings import settings_used, unused_settings

    data = load_dataset("mnist-embedded")
    x, y = data.train.x[:10], data.train.y[:10]
    base = dict(method=method, dataset="mnist-embedded", batch_size=10, n_hidden=3, noise_dim=8, **keys)
    if method == "amortized-svgd":
        base["energy_from"] = energy_run
    cfg = Config(**base).validate()
    reference = _after_one_step(cfg, x, y)
    unread = [k for k in OTHER_VALUE if k not in settings_used(cfg) and k not in base]
    assert unread, method
    tried = 0
    for key in unread:
        try:
            other = Config(**{**base, key: OTHER_VALUE[key]}).validate()
        except ConfigError:
            continue
        assert set(unused_settings(other)) - set(unused_settings(cfg)) == {key}
        after = _after_one_step(other, x, y)
        assert all(torch.equal(a, b) for a, b in zip(after, reference)), f"{method} reads {key}"
        tried += 1
    assert tried >= len(unread) // 2, (method, tried, unread)
    # and a key the rule does read does change the step (so the comparison can tell)
    read = {"cd": "cd_k", "score-matching": "sm_probes", "dcgan": "gen_lr"}.get(method, "gen_lr")
    if method in ("steincd", "symmetric-steincd", "stein-score-matching"):
        read = "bandwidth"
    changed = _after_one_step(Config(**{**base, read: OTHER_VALUE[read]}).validate(), x, y)
    assert not all(torch.equal(a, b) for a, b in zip(changed, reference)), f"{method}: {read}"


def test_only_the_keys_a_run_reads_are_saved_and_compared(tmp_path):
    from steinebm.engine.preflight import config_diff
    from steinebm.engine.settings import used_dict

    cfg = Config(method="cd", epsilon=0.5, out_dir=str(tmp_path)).validate()
    saved = used_dict(cfg)
    assert "cd_k" in saved and "epsilon" not in saved and "gen_lr" not in saved
    # a resume's comparison ignores a key neither run reads, and sees one that both read
    assert config_diff({**cfg.to_dict(), "epsilon": 0.01}, cfg) == []
    assert config_diff({**cfg.to_dict(), "cd_k": 5}, cfg) == ["cd_k"]


def test_an_unread_key_is_named_in_one_line_and_left_out_of_config_yaml(tmp_path, capsys):
    import yaml

    from steinebm.cli import main

    run = tmp_path / "run"
    args = ["train", "method=cd", "epsilon=0.5", "dataset=mnist-embedded", "n_train=40", "batch_size=10"]
    assert main([*args, "n_hidden=3", "max_steps=1", "progress=false", f"out_dir={run}"]) == 0
    err = capsys.readouterr().err
    notes = [ln for ln in err.splitlines() if "does not read" in ln]
    assert notes == ["steinebm: method=cd does not read epsilon: ignored, and left out of config.yaml"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert "epsilon" not in saved and saved["cd_k"] == 1 and saved["method"] == "cd"
