"""docs/tutorial.md runs as written: its Python blocks, in order, in one namespace, in a fresh
folder; then what the page claims is checked on the values it computed."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from PIL import Image

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), flags=re.S)


def test_tutorial_runs_and_trains_both_ways(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    blocks = _blocks()
    assert len(blocks) == 5
    ns: dict = {"__name__": "tutorial"}
    for code in blocks:
        exec(compile(code, str(TUTORIAL), "exec"), ns)
    # both rules turn a model that prefers noise into one that prefers real digits, by a wide margin
    assert ns["gap_untrained"] < 0 and ns["gap_untrained2"] < 0
    assert ns["gap_steincd"] > 0 and ns["gap_steincd"] - ns["gap_untrained"] > 40
    assert ns["gap_steingan"] > 0 and ns["gap_steingan"] - ns["gap_untrained2"] > 40
    for name in ("tutorial-steincd-samples.png", "tutorial-steingan-samples.png"):
        img = Image.open(tmp_path / name)
        assert img.size[0] > 100 and img.size[1] > 100  # an 8 x 8 grid of 28 px digits
    # the user-written energy is the model, unchanged: one value per sample
    assert ns["energy"](torch.rand(3, 784)).shape == (3,)
