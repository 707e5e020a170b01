"""Every learning rule is one object behind one interface: the engine builds the rule the
registry names and calls its step; a rule registered from outside the package trains through
``steinebm train`` like the paper's."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steinebm.engine import build as B
from steinebm.engine import train as T
from steinebm.engine.config import ENERGY_METHODS, GENERATOR_METHODS, METHODS, Config
from steinebm.errors import ConfigError
from steinebm.learners import registry
from steinebm.learners.rules import (
    AlternatingSteinGANRule,
    AmortizedSVGDRule,
    DCGANRule,
    EnergyRule,
    Rule,
    SteinGANRule,
)

ROOT = Path(__file__).resolve().parents[1]

TOY = '''
"""A toy rule: move the RBM's visible bias b towards the batch mean by plain gradient steps
on 0.5 * ||b - mean(x)||^2 (its own optimizer, SGD with lr 0.5)."""
import torch
from steinebm.engine.build import build_model  # noqa: F401  (a plugin may import any part of steinebm)
from steinebm.engine.config import Config  # noqa: F401
from steinebm.learners.registry import register_rule
from steinebm.learners.rules import Rule


class TowardsMean(Rule):
    def __init__(self, model):
        opt = torch.optim.SGD([model.b], lr=0.5)
        super().__init__({"model": model}, {"optimizer": opt})
        self.model, self.opt = model, opt

    def step(self, x_pos, rng, y_pos=None):
        loss = 0.5 * ((self.model.b - x_pos.mean(0)) ** 2).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.detach(), {"b_norm": float(self.model.b.norm())}


register_rule("towards-mean", lambda ctx: TowardsMean(ctx.model))
'''


# An energy-only rule is one learner and one entry: the registry builds the EnergyRule around it
# (the config's Adam on the energy), and its check refuses what it cannot train.
TOY_ENERGY = '''
"""A toy energy rule: the surrogate 0.5 * ||b - mean(x)||^2 on the RBM's visible bias b."""
from steinebm.learners.base import Learner
from steinebm.learners.registry import invalid, register_rule


class PullBias(Learner):
    name = "pull-bias"

    def loss(self, energy, x_pos, generator=None):
        gap = energy.b - x_pos.mean(0)
        return 0.5 * (gap**2).sum(), {"gap": gap.norm().detach()}


def check(cfg):
    if cfg.model != "rbm":
        raise invalid(cfg, "model", "pull-bias moves the visible bias of model=rbm")


register_rule("pull-bias", learner=lambda ctx: PullBias(), settings=(), check=check)
'''


def test_every_method_builds_its_rule(tmp_path):
    expected = {
        "cd": EnergyRule,
        "steincd": EnergyRule,
        "symmetric-steincd": EnergyRule,
        "stein-score-matching": EnergyRule,
        "score-matching": EnergyRule,
        "steingan": SteinGANRule,
        "dcgan": DCGANRule,
    }
    assert set(expected) | {"amortized-svgd"} <= set(registry.methods())
    for method, cls in expected.items():
        rule = T.build_parts(Config(method=method, n_hidden=3), 784, torch.device("cpu"))
        assert type(rule) is cls, method
        assert set(rule.modules) == ({"model", "generator"} if registry.trains_generator(method) else {"model"})
    joint = dict(model="joint", dataset="mnist", width=4, code_dim=8, gen_kernel="feature")
    rule = T.build_parts(Config(method="steingan", schedule="alternate", **joint), 784, torch.device("cpu"))
    assert type(rule) is AlternatingSteinGANRule and set(rule.modules) == {"model", "generator", "schedule"}
    src = tmp_path / "src"
    T.train(Config(method="steincd", dataset="mnist-embedded", n_train=200, n_hidden=3, max_steps=2,
                   progress=False, out_dir=str(src)))  # fmt: skip
    rule = T.build_parts(Config(method="amortized-svgd", n_hidden=3, energy_from=str(src)), 784, torch.device("cpu"))
    assert type(rule) is AmortizedSVGDRule and rule.frozen == {"model"}


def test_the_loop_names_no_rule():
    """The training loop (train.py) holds no algorithm: no learner, loss or rule class by name."""
    text = (ROOT / "src" / "steinebm" / "engine" / "train.py").read_text()
    loop = text[text.index("def _train(") :]
    for name in ("SteinGAN", "SteinCD", "DCGAN", "steingan", "dcgan", "amortized", "Langevin", "phi"):
        assert name not in loop, name


def test_a_rule_registered_from_outside_trains_with_steinebm_train(tmp_path):
    (tmp_path / "toyrule.py").write_text(TOY)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'src'}", "STEINEBM_PLUGINS": "toyrule"}
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "steinebm.cli", "train", "method=towards-mean", "dataset=mnist-embedded",
           "n_train=200", "batch_size=100", "n_hidden=3", "epochs=3", "progress=false", f"out_dir={run}"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # three epochs of two batches each: b after six SGD steps of lr 0.5 on 0.5 * ||b - mean||^2,
    # the batches those of the loop's seeded order, replayed here by hand
    from steinebm.data import load_dataset

    x = load_dataset("mnist-embedded").train.x[:200].double()
    b = B.build_model(Config(n_hidden=3), 784, torch.Generator().manual_seed(0)).b.detach().double()
    for epoch in range(3):
        perm = torch.randperm(200, generator=torch.Generator().manual_seed(epoch))
        for k in range(2):
            b = b - 0.5 * (b - x[perm[100 * k : 100 * (k + 1)]].mean(0))
    saved = T.load_checkpoint(run)["model"]["b"].double()
    torch.testing.assert_close(saved, b, rtol=1e-5, atol=1e-6)
    last = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("test_ll" in r for r in last)  # evaluated like any RBM run
    # a plugin that fails to import: one line, exit 2
    (tmp_path / "brokenrule.py").write_text("raise RuntimeError('half-written plugin')\n")
    done = subprocess.run(cmd, env={**env, "STEINEBM_PLUGINS": "brokenrule"}, capture_output=True, text=True)
    assert done.returncode == 2 and "half-written plugin" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # without the plugin the method is unknown: one line, exit 2
    env.pop("STEINEBM_PLUGINS")
    done = subprocess.run(cmd[:-1] + [f"out_dir={tmp_path / 'r2'}"], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "towards-mean" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _plugin_env(tmp_path: Path, module: str, text: str) -> dict[str, str]:
    (tmp_path / f"{module}.py").write_text(text)
    return {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'src'}", "STEINEBM_PLUGINS": module}


def test_an_energy_rule_is_one_learner_and_one_entry(tmp_path):
    """Registered with its learner alone, a rule trains through ``steinebm train``: Adam (the
    config's, lr 0.05) on the learner's surrogate, step by step as computed here by hand."""
    env = _plugin_env(tmp_path, "toyenergy", TOY_ENERGY)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "steinebm.cli", "train", "method=pull-bias", "dataset=mnist-embedded",
           "n_train=200", "batch_size=100", "n_hidden=3", "epochs=3", "lr=0.05", "log_every=1", "progress=false",
           f"out_dir={run}"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from steinebm.data import load_dataset

    # Adam (beta1 0.5, beta2 0.999, eps 1e-8) on the gradient b - mean(x) of each batch, the
    # batches those of the loop's seeded order; W and c have no gradient and stay as they were
    x = load_dataset("mnist-embedded").train.x[:200].double()
    init = B.build_model(Config(n_hidden=3), 784, torch.Generator().manual_seed(0))
    b = init.b.detach().double()
    m, v, t = torch.zeros_like(b), torch.zeros_like(b), 0
    for epoch in range(3):
        perm = torch.randperm(200, generator=torch.Generator().manual_seed(epoch))
        for k in range(2):
            g = b - x[perm[100 * k : 100 * (k + 1)]].mean(0)
            t += 1
            m, v = 0.5 * m + 0.5 * g, 0.999 * v + 0.001 * g**2
            b = b - 0.05 * (m / (1 - 0.5**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    saved = T.load_checkpoint(run)["model"]
    assert (saved["b"].double() - init.b.detach().double()).abs().max() > 0.1  # the steps moved b
    torch.testing.assert_close(saved["b"].double(), b, rtol=1e-5, atol=1e-5)
    for name, p in init.named_parameters():
        if name != "b":
            assert torch.equal(saved[name], p.detach()), name
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("gap" in r for r in records) and any("test_ll" in r for r in records)


def test_a_rules_check_refuses_a_value_in_one_line(tmp_path):
    env = _plugin_env(tmp_path, "toyenergy", TOY_ENERGY)
    cmd = [sys.executable, "-m", "steinebm.cli", "train", "method=pull-bias", "dataset=mnist-embedded",
           "model=autoencoder", f"out_dir={tmp_path / 'run'}"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "steinebm: error: config value model='autoencoder' is invalid: pull-bias moves the visible bias of model=rbm"
    ]
    assert not (tmp_path / "run").exists()


def test_the_registry_holds_what_the_engine_knows_of_each_rule():
    """The paper's method lists come from the registry's entries; each entry says whether it
    trains a generator, has a learner (an energy-only rule) or the DCGAN discriminator, and
    refuses through its own check what the rule cannot train."""
    assert METHODS == registry.METHODS and set(METHODS) <= set(registry.methods())
    assert ENERGY_METHODS == ("cd", "steincd", "symmetric-steincd", "stein-score-matching", "score-matching")
    assert GENERATOR_METHODS == ("steingan", "amortized-svgd", "dcgan")
    assert Config().method == registry.DEFAULT_METHOD == "steincd"
    for method in METHODS:
        entry = registry.rule_entry(method)
        assert (entry.learner is not None) == (method in ENERGY_METHODS) != entry.trains_generator, method
        assert entry.discriminator == (method == "dcgan") and entry.check is not None, method
    assert set(registry.energy_methods()) >= set(ENERGY_METHODS)
    assert set(registry.generator_methods()) >= set(GENERATOR_METHODS)
    with pytest.raises(ValueError, match="build .* or learner"):
        registry.register_rule("nothing-to-build")
    assert "nothing-to-build" not in registry.methods()
    # a rule's check: a one-line ConfigError naming the key, from Config.validate
    with pytest.raises(ConfigError, match=r"^config value batch_size=1 is invalid: SVGD needs at least 2"):
        Config(method="stein-score-matching", batch_size=1).validate()
    Config(method="cd", batch_size=1).validate()  # CD-k needs no second particle


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module that are not docstrings, with their lines."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_the_engine_names_no_method():
    """engine/ (the builders, the loop, the config and its checks) asks the registry what a rule
    needs: no paper method's name appears in its code, as a string or as method=NAME in one
    (docstrings and comments may name them)."""
    assert len(METHODS) == 8
    found = []
    for path in sorted((ROOT / "src" / "steinebm" / "engine").glob("*.py")):
        for line, text in _code_strings(path):
            for name in METHODS:
                if text == name or re.search(rf"method={re.escape(name)}(?![\w-])", text):
                    found.append(f"{path.name}:{line}: {text!r}")
    assert not found, found


def test_a_rule_is_a_rule():
    assert all(issubclass(c, Rule) for c in (EnergyRule, SteinGANRule, DCGANRule, AmortizedSVGDRule))
