"""`steinebm demo`: its table, the reference row's value and the line that explains it."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from steinebm.cli import main
from steinebm.data import Dataset, Split, load_dataset
from steinebm.engine.config_file import load_config
from steinebm.reproduction.reproduce_fig1a import (
    DEMO_PRESETS,
    FIG1A_PRESETS,
    FIG1A_SWEEP,
    baseline_log_likelihood,
    demo_reference_note,
)

ROOT = Path(__file__).resolve().parents[1]
HEADER = "| method | chosen setting | final test LL (nats) | best-epoch test LL |"
DEMO_EPOCHS = 30
# the demo's settings, as Figure 1(a)'s sweep at the demo's scale chose them (docs/results.md)
DEMO_SETTINGS = {
    "CD-1": {"langevin_step": 3.0, "lr": 3e-4},
    "CD-10": {"langevin_step": 3.0, "lr": 3e-3},
    "SteinCD": {"epsilon": 1.0, "lr": 1e-2},
    "Symmetric SteinCD": {"epsilon": 1.0, "lr": 1e-2},
    "Stein score matching": {"lr": 1e-2},
}
# Figure 1(a)'s rules as the paper names them, written out here
FIG1A_RULES = {
    "CD-1": {"method": "cd", "cd_k": 1},
    "CD-10": {"method": "cd", "cd_k": 10},
    "SteinCD": {"method": "steincd"},
    "Symmetric SteinCD": {"method": "symmetric-steincd"},
    "Stein score matching": {"method": "stein-score-matching"},
}


def test_reference_log_likelihood_by_hand():
    # train mean (1, 0); test points at distance 0 and 1 from it: log N(x; mean, I) in 2-d is
    # -log(2 pi) - |x - mean|^2 / 2, so the mean over the two is -log(2 pi) - 1/4
    def split(rows: list[list[float]]) -> Split:
        return Split(torch.tensor(rows), torch.zeros(len(rows), dtype=torch.long))

    data = Dataset(
        "tiny", split([[0.0, 0.0], [2.0, 0.0]]), split([[0.0, 0.0]]), split([[1.0, 0.0], [1.0, 1.0]]), (2,), ""
    )
    assert baseline_log_likelihood(data) == pytest.approx(-math.log(2 * math.pi) - 0.25, abs=1e-6)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_demo_prints_the_table_and_explains_the_reference_row(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index(HEADER)
    assert lines[at + 1] == "| --- | --- | --- | --- |"
    rows = [_cells(line) for line in lines[at + 2 : at + 2 + len(FIG1A_RULES)]]
    # every rule, in Figure 1(a)'s order, each with its demo setting
    assert [r[0] for r in rows] == list(FIG1A_RULES)
    for r in rows:
        setting = dict(kv.split("=") for kv in r[1].split(","))
        want = {**FIG1A_RULES[r[0]], **DEMO_SETTINGS[r[0]]}
        assert setting == {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in want.items()}
    lls = {r[0]: float(r[2].split("±")[0]) for r in rows}
    # the reference row, against log N(x; training mean, I) computed here from the data
    ref = _cells(lines[at + 2 + len(FIG1A_RULES)])
    assert ref[0] == "B = 0, b = training mean"
    ds = load_dataset("mnist-embedded")
    mu = ds.train.x.double().mean(0).numpy()
    xt = ds.test.x.double().numpy()
    expect = float(np.mean(-0.5 * ((xt - mu) ** 2).sum(1) - 0.5 * xt.shape[1] * np.log(2 * np.pi)))
    assert float(ref[2]) == pytest.approx(expect, abs=0.006)
    # one line under the table says what the row is and which rules end above it
    assert lines[at + 3 + len(FIG1A_RULES)] == ""
    note = lines[at + 4 + len(FIG1A_RULES)]
    assert note.startswith("Reference row: B = 0, b = the mean training image is the RBM with its hidden units cut off")
    assert "unit-variance Gaussian" in note and "needs no training" in note
    above = re.search(r"Above it: (.*?); not above it: (.*)\.$", note)
    assert above is not None
    named_above = [] if above.group(1) == "none" else above.group(1).split(", ")
    assert named_above == [m for m, v in lls.items() if v > expect]
    assert above.group(2).split(", ") == [m for m, v in lls.items() if v <= expect]
    assert note in (out / "fig1a.md").read_text() and (out / "fig1a.png").exists()


def test_reference_note_sorts_the_rules():
    rows = [
        {"method": m, "final_test_ll_mean": v} for m, v in (("CD-1", -800.0), ("SteinCD", -744.0), ("CD-10", -746.0))
    ]
    note = demo_reference_note({"baseline_test_ll": -746.0, "rows": rows})
    assert note.endswith("Above it: SteinCD; not above it: CD-1, CD-10.")
    note = demo_reference_note({"baseline_test_ll": -700.0, "rows": rows})
    assert note.endswith("Above it: none; not above it: CD-1, SteinCD, CD-10.")


def test_fig1a_runs_from_its_presets():
    """Each rule of Figure 1(a) is its shipped preset: the rule named as the paper names it."""
    assert list(FIG1A_PRESETS) == list(FIG1A_RULES)
    for label, preset in FIG1A_PRESETS.items():
        cfg = load_config(preset)
        assert {k: getattr(cfg, k) for k in FIG1A_RULES[label]} == FIG1A_RULES[label]


def test_demo_presets_are_the_fig1a_rules_at_the_demo_settings():
    """Each demo preset is its rule's Figure 1(a) preset with the demo's setting, on the embedded
    subset for the demo's epochs; nothing else differs (but the folder and threads)."""
    assert list(DEMO_PRESETS) == list(FIG1A_PRESETS)
    for label, preset in DEMO_PRESETS.items():
        demo_cfg = load_config(preset).to_dict()
        want = {**load_config(FIG1A_PRESETS[label]).to_dict(), **DEMO_SETTINGS[label]}
        want.update(dataset="mnist-embedded", epochs=DEMO_EPOCHS)
        differ = {k for k in want if want[k] != demo_cfg[k]}
        assert differ <= {"out_dir", "threads"}, (preset, differ)
        assert set(DEMO_SETTINGS[label]) == set(FIG1A_SWEEP[label])
