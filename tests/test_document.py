"""A figure's page as data (steinebm.reproduction.document): its markdown against text written
out by hand, its HTML's structure, and what a damaged page read back from summary.json is."""

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from steinebm.reproduction.document import (
    check_page,
    claims_table,
    heading,
    image_cell,
    image_files,
    images,
    page,
    strong,
    table,
    text,
    to_html,
    to_markdown,
    write_page,
)


def _small() -> list[dict]:
    return [
        heading("Figure 9: <the> test & more"),
        text("Dataset: ", strong("tiny"), " run; a < b & c > d."),
        table(
            ["claim", "measured", "verdict"],
            [["x | y beats z", "-700 < -720?\nno", "held"], ["SteinGAN & DCGAN", "", "not held"]],
        ),
        table(["panel", "picture"], [["SteinGAN", image_cell("grid.png")], ["theirs"]]),
        images([("fig9.png", "the figure"), ("gone.png", "gone")]),
    ]


def test_markdown_by_hand():
    expected = (
        "# Figure 9: <the> test & more\n"
        "\n"
        "Dataset: **tiny** run; a < b & c > d.\n"
        "\n"
        "| claim | measured | verdict |\n"
        "| --- | --- | --- |\n"
        "| x \\| y beats z | -700 < -720? no | held |\n"
        "| SteinGAN & DCGAN | | not held |\n"
        "\n"
        "| panel | picture |\n"
        "| --- | --- |\n"
        "| SteinGAN | grid.png |\n"
        "| theirs |\n"
        "\n"
        "![the figure](fig9.png) ![gone](gone.png)\n"
    )
    assert to_markdown(_small()) == expected
    assert to_markdown([heading("deep", 3), claims_table([{"claim": "c", "measured": "m", "verdict": "v"}])]) == (
        "### deep\n\n| claim | measured | verdict |\n| --- | --- | --- |\n| c | m | v |\n"
    )


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self.tags: list[str] = []
        self.imgs: list[dict[str, str]] = []
        self.text: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("th", "td"):
            self._in, self.cells = tag, [*self.cells, (tag, "")]
        if tag == "img":
            self.imgs.append({k: v or "" for k, v in attrs})

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self._in = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in is not None:
            kind, old = self.cells[-1]
            self.cells[-1] = (kind, old + data)


def _png(path: Path, size: tuple[int, int]) -> None:
    Image.new("RGB", size, (10, 200, 30)).save(path)


def test_html_structure(tmp_path):
    _png(tmp_path / "fig9.png", (30, 20))
    _png(tmp_path / "grid.png", (12, 12))
    out = to_html(_small(), tmp_path, first_heading=4)
    # < & > in the page's text are escaped, not markup
    assert "&lt;the&gt; test &amp; more" in out and "a &lt; b &amp; c &gt; d." in out
    assert "<the>" not in out
    p = _Html()
    p.feed(out)
    assert "h4" in p.tags and "h1" not in p.tags and "strong" in p.tags
    heads = [c for k, c in p.cells if k == "th"]
    cells = [c.strip() for k, c in p.cells if k == "td"]
    assert heads == ["claim", "measured", "verdict", "panel", "picture"]
    # each cell in its own <td>, a | kept as text, a short row padded to the table's width
    assert cells[:6] == ["x | y beats z", "-700 < -720?\nno", "held", "SteinGAN & DCGAN", "", "not held"]
    assert cells[6] == "SteinGAN" and cells[7] == "grid.png" and cells[8:] == ["theirs", ""]
    # the picture cell and the picture block are the PNGs themselves, as data: URIs
    by_source = {}
    for img in p.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        raw = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert raw == (tmp_path / img["data-source"]).read_bytes()
        by_source[img["data-source"]] = Image.open(io.BytesIO(raw)).size
    assert by_source == {"grid.png": (12, 12), "fig9.png": (30, 20)}
    assert "[picture gone.png not found]" in "".join(p.text)
    assert image_files(_small()) == {"grid.png", "fig9.png", "gone.png"}


def test_a_page_survives_json_and_is_written_as_its_markdown(tmp_path):
    doc = page("fig9.md", _small())
    assert check_page(json.loads(json.dumps(doc))) == doc
    write_page(tmp_path, {"rows": [1, 2]}, doc)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["rows"] == [1, 2] and saved["document"] == doc
    assert (tmp_path / "fig9.md").read_text() == to_markdown(doc["blocks"])


@pytest.mark.parametrize(
    "doc",
    [
        [],  # a bare list of blocks: no file name
        {"file": "x.md", "blocks": [{"kind": "chart"}]},
        {"file": "x.md", "blocks": [{"kind": "table", "header": ["a"], "rows": [["b", 3]]}]},
        {"file": "x.md", "blocks": [{"kind": "text", "text": [{"italic": "b"}]}]},
        {"file": "x.md", "blocks": [{"kind": "images", "images": [{"caption": "no file"}]}]},
        {"file": "x.md", "blocks": ["text"]},
    ],
)
def test_damaged_pages_are_refused(doc):
    with pytest.raises(ValueError):
        check_page(doc)
