"""``steinebm report``: the page's structure from real (tiny) runs, bad input, and how it renders
in a headless Chromium."""

import base64
import io
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from steinebm.cli import main
from steinebm.reproduction import document as doc
from steinebm.reproduction.report import PANEL_COLUMNS, PANEL_PX, write_report

TINY = ["dataset=mnist-embedded", "n_train=100", "batch_size=25", "n_hidden=3", "max_steps=12", "log_every=4"]
N_FRESH = 16  # a 4 x 4 grid of 28 px images, 2 px apart, doubled: 244 px square
GRID_PX = 2 * (4 * 30 + 2)
MAGENTA = (230, 30, 160)  # fig9.png's colour, which nothing else on the page has


def _png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    Image.new("RGB", size, colour).save(path)


@pytest.fixture(scope="module")
def repro(tmp_path_factory) -> Path:
    """A folder shaped like a reproduction: two real runs (an RBM trained by SteinCD and a
    SteinGAN with its generator) under runs/, a page in summary.json (and its FIGURE.md) with
    two tables, a picture cell and pictures (one of them missing), one PNG it does not mention;
    the SteinGAN run also holds a samples.png, as `steinebm sample` leaves it."""
    root = tmp_path_factory.mktemp("fig9")
    rbm, gan = root / "runs" / "steincd" / "seed0", root / "runs" / "steingan" / "seed0"
    assert main(["train", *TINY, "method=steincd", "progress=false", f"out_dir={rbm}"]) == 0
    assert main(["train", *TINY, "method=steingan", "seed=1", "progress=false", f"out_dir={gan}"]) == 0
    assert main(["sample", str(gan), "--n", "9"]) == 0
    _png(root / "fig9.png", (90, 60), MAGENTA)
    _png(root / "fig9-grid.png", (50, 50), (120, 120, 120))
    _png(root / "fig9-extra.png", (70, 30), (200, 200, 200))
    claims = [["SteinCD beats CD", "-700 vs -720", "held"], ["SteinGAN draws digits", "1.2", "not held"]]
    blocks = [
        doc.text("Dataset: mnist-embedded; a ", doc.strong("tiny"), " run."),
        doc.table(["claim", "measured", "verdict"], claims),
        doc.table(["panel", "picture"], [["SteinGAN", doc.image_cell("fig9-grid.png")]]),
        doc.images([("fig9.png", "the figure"), ("no-such.png", "gone")]),
    ]
    doc.write_page(root, {"rows": [{"variant": "a", "ll_mean": -700.0}]}, doc.page("fig9.md", blocks))
    return root


VOID = {"img", "meta", "br", "hr", "link", "input"}


class _Page(HTMLParser):
    """The parts of the page the tests look at; also checks that every element is closed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.misnested: list[str] = []
        self.imgs: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.tables: list[dict] = []
        self.pre: list[str] = []
        self._cell: list[str] | None = None
        self._pre: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag not in VOID:
            self.open.append(tag)
        self.urls += [a[k] for k in ("src", "href") if k in a]
        if tag == "img":
            self.imgs.append(a)
        elif tag == "table":
            self.tables.append({"class": a.get("class", ""), "head": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td"):
            self._cell = []
        elif tag == "pre":
            self._pre = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._pre is not None:
            self._pre.append(data)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.misnested.append(tag)
        if tag in ("th", "td") and self._cell is not None and self.tables:
            text = "".join(self._cell).strip()
            (self.tables[-1]["head"] if tag == "th" else self.tables[-1]["rows"][-1]).append(text)
            self._cell = None
        if tag == "pre" and self._pre is not None:
            self.pre.append("".join(self._pre))
            self._pre = None


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    page.close()
    assert not page.open and not page.misnested, (page.open, page.misnested)
    return page


def _decode(img: dict[str, str]) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix), img["src"][:60]
    data = base64.b64decode(img["src"][len(prefix) :], validate=True)
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG"
    im.load()
    return im


def _curves_size(run: Path) -> tuple[int, int]:
    """The curve figure's size, from the log: one panel for the log-likelihoods, one per other
    evaluated number and one per training number, PANEL_COLUMNS to a row."""
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]

    def numbers(rs, skip):
        return {k for r in rs for k, v in r.items() if k not in skip and isinstance(v, (int, float))}

    ev = numbers([r for r in recs if "epoch" in r], {"step", "epoch", "time", "ll_stderr"})
    tr = numbers([r for r in recs if "epoch" not in r], {"step"})
    n = (1 if ev & {"test_ll", "val_ll"} else 0) + len(ev - {"test_ll", "val_ll"}) + len(tr)
    cols = min(PANEL_COLUMNS, n)
    return cols * PANEL_PX[0], math.ceil(n / cols) * PANEL_PX[1]


def _differing(*runs: Path) -> list[str]:
    cfgs = [yaml.safe_load((r / "config.yaml").read_text()) for r in runs]
    keys = list(dict.fromkeys(k for c in cfgs for k in c))
    # a key one run's config.yaml lacks (its method does not read it) differs from any value
    return [k for k in keys if k != "out_dir" and len({json.dumps(c[k]) if k in c else "—" for c in cfgs}) > 1]


def _assert_self_contained(page: _Page) -> None:
    assert all(u.startswith(("data:image/png;base64,", "#")) for u in page.urls), [u[:60] for u in page.urls]
    assert "link" not in page.tags and "iframe" not in page.tags


def test_reproduction_page(repro, tmp_path):
    out = write_report([repro], tmp_path / "r.html", samples=N_FRESH, gibbs_steps=5)
    page = _parse(out)
    _assert_self_contained(page)
    rbm, gan = repro / "runs" / "steincd" / "seed0", repro / "runs" / "steingan" / "seed0"

    by_kind: dict[str, list[tuple[dict, Image.Image]]] = {}
    for img in page.imgs:
        by_kind.setdefault(img.get("data-kind", "?"), []).append((img, _decode(img)))
    assert sorted(by_kind) == ["curves", "existing", "figure", "samples"]
    # one curve figure per run, in page order, each as large as its panels
    assert [im.size for _, im in by_kind["curves"]] == [_curves_size(rbm), _curves_size(gan)]
    # one fresh grid per run (Gibbs samples of the RBM; the SteinGAN's generator)
    assert [im.size for _, im in by_kind["samples"]] == [(GRID_PX, GRID_PX)] * 2
    # samples.png of the SteinGAN run, byte for byte
    [(img, im)] = by_kind["existing"]
    assert img["data-source"] == "samples.png" and im.size == Image.open(gan / "samples.png").size
    # the page's picture and picture cell, then the PNG it does not mention; the missing one is text
    figures = {img["data-source"]: im.size for img, im in by_kind["figure"]}
    assert figures == {"fig9-grid.png": (50, 50), "fig9.png": (90, 60), "fig9-extra.png": (70, 30)}
    assert len(page.imgs) == 2 + 2 + 1 + 3
    assert "no-such.png not found" in out.read_text()

    md = [t for t in page.tables if t["class"] == "doc"]
    assert [t["head"] for t in md] == [["claim", "measured", "verdict"], ["panel", "picture"]]
    assert md[0]["rows"][1:] == [
        ["SteinCD beats CD", "-700 vs -720", "held"],
        ["SteinGAN draws digits", "1.2", "not held"],
    ]

    [diff] = [t for t in page.tables if t["class"] == "diff"]
    keys = _differing(rbm, gan)
    assert {"method", "seed"} <= set(keys)
    assert diff["head"] == ["run", *keys]
    assert [row[0] for row in diff["rows"][1:]] == ["steincd/seed0", "steingan/seed0"]
    assert "steps done" in out.read_text() and "12 of 12: finished" in out.read_text()


def test_a_reproduction_page_is_rendered_from_summary_json(tmp_path):
    """fig1a writes its page into summary.json and FIGURE.md as that page's markdown; the report
    draws the tables from summary.json alone, so they survive the markdown file's removal."""
    from steinebm.reproduction.reproduce_fig1a import fig1a

    out = tmp_path / "fig1a"
    summary = fig1a(
        out=out, dataset="mnist-embedded", seeds=1, epochs=1, sweep=False, jobs=1, n_train=200,
        methods=["CD-1", "SteinCD"], log=lambda s: None,
    )  # fmt: skip
    page = json.loads((out / "summary.json").read_text())["document"]
    assert page["file"] == "fig1a.md"
    assert doc.to_markdown(page["blocks"]) == (out / "fig1a.md").read_text()
    (out / "fig1a.md").unlink()
    html = _parse(write_report([out], tmp_path / "r.html", samples=0))
    tables = [t for t in html.tables if t["class"] == "doc"]
    assert [t["head"] for t in tables] == [
        ["method", "chosen setting", "final test LL (nats)", "best-epoch test LL"],
        ["claim", "measured", "verdict"],
    ]
    rows = tables[0]["rows"][1:]
    assert [r[0] for r in rows] == ["CD-1", "SteinCD", "B = 0, b = training mean"]
    assert rows[1][2] == f"{summary['rows'][1]['final_test_ll_mean']:.2f} ± 0.00"
    assert rows[2][2] == f"{summary['baseline_test_ll']:.2f}"
    assert tables[1]["rows"][1:] == [[c["claim"], c["measured"], c["verdict"]] for c in summary["claims"]]
    # the figure the page does not show is under "figures"
    assert [img["data-source"] for img in html.imgs if img["data-kind"] == "figure"] == ["fig1a.png"]


def test_an_older_reproduction_shows_its_markdown_unparsed(tmp_path):
    """A folder written before summary.json held the page: its markdown is shown as text (escaped),
    with a note, and nothing of it is read as tables or pictures."""
    old = tmp_path / "old"
    old.mkdir()
    text = "Dataset: x.\n\n| a | b |\n| --- | --- |\n| <b>x</b> & y | 1 |\n\n![the figure](fig9.png)\n"
    (old / "fig9.md").write_text(text)
    _png(old / "fig9.png", (90, 60), MAGENTA)
    (old / "summary.json").write_text(json.dumps({"rows": [1]}))
    out = write_report([old], tmp_path / "r.html", samples=0)
    html = _parse(out)
    assert not html.tables and "b" not in html.tags  # no table, and the <b> stayed text
    assert html.pre[0] == text
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in out.read_text()
    assert "written by an older version" in out.read_text() and "reproduce command again" in out.read_text()
    # the picture is shown once, as a file of the folder, not as the markdown's picture
    assert [img["data-source"] for img in html.imgs] == ["fig9.png"]


def test_runs_side_by_side_without_fresh_samples(repro, tmp_path, capsys):
    rbm, gan = repro / "runs" / "steincd" / "seed0", repro / "runs" / "steingan" / "seed0"
    out = tmp_path / "two.html"
    assert main(["report", str(rbm), str(gan), "--out", str(out), "--samples", "0"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = _parse(out)
    _assert_self_contained(page)
    kinds = [img["data-kind"] for img in page.imgs]
    assert kinds == ["curves", "curves", "existing"]
    for img in page.imgs:
        _decode(img)
    [diff] = [t for t in page.tables if t["class"] == "diff"]
    # the runs share their folder name, so the rows are told apart by their parents
    assert diff["head"] == ["run", *_differing(rbm, gan)]
    assert len({row[0] for row in diff["rows"][1:]}) == 2
    assert not [t for t in page.tables if t["class"] == "doc"]


def test_a_run_named_twice_is_shown_once(repro, tmp_path):
    rbm = repro / "runs" / "steincd" / "seed0"
    page = _parse(write_report([repro, rbm, repro], tmp_path / "r.html", samples=0))
    assert [img["data-kind"] for img in page.imgs].count("curves") == 2


def test_partial_last_line_is_read(repro, tmp_path):
    """A run killed mid-write leaves half a line: the report shows the rest."""
    run = tmp_path / "run"
    shutil.copytree(repro / "runs" / "steincd" / "seed0", run)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 25, "loss": 1.')
    page = _parse(write_report([run], tmp_path / "p.html", samples=0))
    assert [img["data-kind"] for img in page.imgs] == ["curves"]


def _damaged_metrics(repro: Path, tmp: Path) -> Path:
    run = tmp / "damaged"
    shutil.copytree(repro / "runs" / "steincd" / "seed0", run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


def _damaged_page(repro: Path, tmp: Path) -> Path:
    folder = tmp / "badpage"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"document": {"file": "x.md", "blocks": [{"kind": "chart"}]}}))
    return folder


def _damaged_config(repro: Path, tmp: Path) -> Path:
    run = tmp / "badcfg"
    shutil.copytree(repro / "runs" / "steincd" / "seed0", run)
    (run / "config.yaml").write_text("- just\n- a list\n")
    return run


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda repro, tmp: tmp, "is not a run folder"),  # an empty folder
        (lambda repro, tmp: tmp / "nothing-here", "is not a folder"),
        (_damaged_metrics, "is damaged at line 2"),
        (_damaged_config, "is not a steinebm config"),
        (_damaged_page, "is damaged (block 0 is not one of the kinds"),
    ],
    ids=["empty-folder", "missing", "damaged-metrics", "damaged-config", "damaged-page"],
)
def test_bad_input_is_one_line_and_exit_2(make, needle, repro, tmp_path, capsys):
    arg = make(repro, tmp_path / "in")
    (tmp_path / "in").mkdir(exist_ok=True)
    out = tmp_path / "out.html"
    assert main(["report", str(arg), "--out", str(out), "--samples", "0"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("steinebm: error:") and needle in lines[0], lines
    assert not out.exists()


def test_negative_samples_and_help(repro, capsys):
    assert main(["report", str(repro), "--samples", "-1"]) == 2
    assert "--samples must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0 and "examples:" in capsys.readouterr().out


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        # not a skip: the page's rendering would then go unchecked without anyone noticing
        pytest.fail(
            "headless Chromium is needed to check that the report renders: install Debian's `chromium` "
            "(`make test` does: apt-get install -y chromium)"
        )
    return exe


def test_page_renders_in_headless_chromium(repro, tmp_path):
    exe = _chromium()
    out = write_report([repro], tmp_path / "r.html", samples=N_FRESH, gibbs_steps=5)
    n_images = len(_parse(out).imgs)
    common = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    common += [f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    url = out.resolve().as_uri()

    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the page's own script counts the pictures the browser decoded
    assert f'data-images-loaded="{n_images}"' in dom.stdout, dom.stdout[:500]
    assert f'data-images-total="{n_images}"' in dom.stdout

    shot = tmp_path / "shot.png"
    res = subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1200,2000", url], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    # the page writes nothing to the console, so any console line (an uncaught error, a failed
    # load) is a fault; Chromium's own complaints about the sandbox's missing D-Bus are not
    console = [ln for ln in (dom.stderr + res.stderr).splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32)
    grey = rgb.mean(axis=2)
    assert grey.shape == (2000, 1200)
    # text, tables and figures, not an empty white page
    assert grey.std() > 20 and (grey < 200).mean() > 0.02, (grey.std(), (grey < 200).mean())
    # and the figure near the top was painted, all of it, at its own size
    painted = (np.abs(rgb - np.array(MAGENTA)).max(axis=2) <= 3).sum()
    assert 0.95 * 90 * 60 <= painted <= 1.05 * 90 * 60, painted
