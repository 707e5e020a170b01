"""A figure's page as data: what a reproduction command shows beside its numbers (headings,
lines of text, the tables of the paper against the measurement, pictures), kept in the figure's
``summary.json`` under ``"document"`` and rendered from there both to markdown (the FIGURE.md the
command writes) and to HTML (``steinebm report``). Neither rendering is ever parsed back.

A page is plain JSON: ``{"file": "fig1a.md", "blocks": [...]}``, ``file`` naming the markdown
rendering beside summary.json. Each block is a dict with a ``kind``:

- ``{"kind": "heading", "text": str, "level": int}``
- ``{"kind": "text", "text": Inline}``, where Inline is a string or a list of strings and
  ``{"strong": str}`` (bold) spans
- ``{"kind": "table", "header": [Cell], "rows": [[Cell]]}``, where a Cell is a string or
  ``{"image": "file.png"}``, a picture beside summary.json (a thumbnail in HTML, its name in markdown)
- ``{"kind": "images", "images": [{"file": str, "caption": str}]}``: pictures side by side

The builders below make them:

>>> doc = page("fig9.md", [
...     heading("Figure 9"),
...     text(strong("SteinCD"), " beats CD."),
...     table(["claim", "verdict"], [["a | b", "held"], ["grid", image_cell("fig9.png")]]),
...     images([("fig9.png", "the figure")]),
... ])
>>> print(to_markdown(doc["blocks"]), end="")
# Figure 9
<BLANKLINE>
**SteinCD** beats CD.
<BLANKLINE>
| claim | verdict |
| --- | --- |
| a \\| b | held |
| grid | fig9.png |
<BLANKLINE>
![the figure](fig9.png)
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "heading",
    "text",
    "strong",
    "table",
    "image_cell",
    "images",
    "claims_table",
    "page",
    "check_page",
    "image_files",
    "to_markdown",
    "to_html",
    "write_page",
    "esc",
    "img_tag",
    "figure_tag",
    "html_table",
    "read_png",
]

Block = dict[str, Any]
Page = dict[str, Any]
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_KINDS = ("heading", "text", "table", "images")


# ---------------------------------------------------------------------------------------------
# building


def heading(title: str, level: int = 1) -> Block:
    """A heading; ``level`` 1 is the page's top level (``#`` in markdown)."""
    return {"kind": "heading", "text": title, "level": level}


def strong(s: str) -> dict[str, str]:
    """A bold span of a :func:`text` block."""
    return {"strong": s}


def text(*spans: str | dict[str, str]) -> Block:
    """A line (a paragraph) of text: plain strings and :func:`strong` spans, in order."""
    if len(spans) == 1 and isinstance(spans[0], str):
        return {"kind": "text", "text": spans[0]}
    return {"kind": "text", "text": list(spans)}


def image_cell(file: str) -> dict[str, str]:
    """A table cell that is a picture beside summary.json, named by its file name."""
    return {"image": file}


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> Block:
    """A table: header cells and rows of cells (strings, or :func:`image_cell` pictures)."""
    return {"kind": "table", "header": list(header), "rows": [list(r) for r in rows]}


def images(pictures: Iterable[tuple[str, str]]) -> Block:
    """Pictures side by side, as (file name, caption) pairs."""
    return {"kind": "images", "images": [{"file": f, "caption": c} for f, c in pictures]}


def claims_table(claims: Iterable[dict[str, str]]) -> Block:
    """The table of a figure's verdicts: each claim of the paper, what was measured, the verdict."""
    return table(["claim", "measured", "verdict"], [[c["claim"], c["measured"], c["verdict"]] for c in claims])


def page(file: str, blocks: list[Block]) -> Page:
    """A figure's page: its blocks, and ``file``, the name of its markdown rendering."""
    return {"file": file, "blocks": blocks}


def _is_cell(c: Any) -> bool:
    return isinstance(c, str) or (isinstance(c, dict) and set(c) == {"image"} and isinstance(c["image"], str))


def _is_inline(t: Any) -> bool:
    spans = t if isinstance(t, list) else [t]
    return all(isinstance(s, str) or (isinstance(s, dict) and set(s) == {"strong"}) for s in spans)


def _well_formed(b: dict[str, Any]) -> bool:
    """Whether block ``b``, of a known kind, holds what its kind needs."""
    if b["kind"] == "heading":
        return isinstance(b.get("text"), str) and isinstance(b.get("level"), int)
    if b["kind"] == "text":
        return _is_inline(b.get("text"))
    if b["kind"] == "table":
        header, rows = b.get("header"), b.get("rows")
        return (
            isinstance(header, list)
            and isinstance(rows, list)
            and all(isinstance(r, list) and all(map(_is_cell, r)) for r in [header, *rows])
        )
    pics = b.get("images")
    return isinstance(pics, list) and all(isinstance(i, dict) and isinstance(i.get("file"), str) for i in pics)


def check_page(doc: Any) -> Page:
    """``doc`` if it is a page as described in the module docstring (as read back from a
    summary.json, which may have been edited or damaged); otherwise ValueError saying what is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("file"), str) or not isinstance(doc.get("blocks"), list):
        raise ValueError("a page is a mapping with a 'file' name and a list of 'blocks'")
    for k, b in enumerate(doc["blocks"]):
        kind = b.get("kind") if isinstance(b, dict) else None
        if kind not in _KINDS:
            raise ValueError(f"block {k} is not one of the kinds {', '.join(_KINDS)}")
        if not _well_formed(b):
            raise ValueError(f"block {k} (a {kind}) is malformed")
    return doc


def image_files(blocks: Iterable[Block]) -> set[str]:
    """The file names of every picture the blocks show (in image blocks and picture cells)."""
    names: set[str] = set()
    for b in blocks:
        if b["kind"] == "images":
            names.update(i["file"] for i in b["images"])
        elif b["kind"] == "table":
            names.update(c["image"] for r in [b["header"], *b["rows"]] for c in r if isinstance(c, dict))
    return names


# ---------------------------------------------------------------------------------------------
# markdown


def _md_inline(t: str | list[Any]) -> str:
    spans = t if isinstance(t, list) else [t]
    return "".join(s if isinstance(s, str) else f"**{s['strong']}**" for s in spans)


def _md_cell(c: str | dict[str, str]) -> str:
    s = c["image"] if isinstance(c, dict) else c
    # a cell is one line, and a bare | would end it
    s = " ".join(s.splitlines()).replace("|", "\\|").strip()
    return f" {s} " if s else " "


def _md_row(cells: Sequence[Any]) -> str:
    return "|" + "|".join(_md_cell(c) for c in cells) + "|"


def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as markdown (what a reproduction writes to its FIGURE.md): one block per
    paragraph, blank lines between them. Text is written as it is; in a table cell a ``|`` is
    escaped and line breaks become spaces, so the cell stays one cell."""
    out = []
    for b in blocks:
        if b["kind"] == "heading":
            out.append("#" * max(1, min(6, b["level"])) + " " + b["text"])
        elif b["kind"] == "text":
            out.append(_md_inline(b["text"]))
        elif b["kind"] == "table":
            width = max([len(b["header"]), *(len(r) for r in b["rows"])])
            head = b["header"] + [""] * (width - len(b["header"]))
            lines = [_md_row(head), _md_row(["---"] * width), *(_md_row(r) for r in b["rows"])]
            out.append("\n".join(lines))
        else:
            out.append(" ".join(f"![{i.get('caption', '')}]({i['file']})" for i in b["images"]))
    return "\n\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML


def esc(v: Any) -> str:
    """``str(v)`` escaped for HTML text and attribute values."""
    return html.escape(str(v), quote=True)


def read_png(path: Path) -> bytes | None:
    """The bytes of a PNG file, or None if it cannot be read or is not a PNG."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if data.startswith(_PNG_MAGIC) else None


def img_tag(data: bytes, alt: str, kind: str, source: str = "", cls: str = "") -> str:
    """An ``<img>`` holding the PNG ``data`` as a ``data:`` URI (the page needs no other file);
    ``kind`` and ``source`` (the file it came from) are data attributes for the page's tests."""
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    extra = f' data-source="{esc(source)}"' if source else ""
    klass = f' class="{cls}"' if cls else ""
    return f'<img src="{src}" alt="{esc(alt)}" data-kind="{kind}"{extra}{klass}>'


def figure_tag(data: bytes, caption: str, kind: str, source: str = "", cls: str = "") -> str:
    """:func:`img_tag` in a ``<figure>`` with its caption."""
    return f"<figure>{img_tag(data, caption, kind, source, cls)}<figcaption>{esc(caption)}</figcaption></figure>"


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A table of already-escaped HTML cells (no header row if ``header`` is empty)."""
    klass = f' class="{cls}"' if cls else ""
    head = "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{klass}>{head}<tbody>{body}</tbody></table>"


def _html_inline(t: str | list[Any]) -> str:
    spans = t if isinstance(t, list) else [t]
    return "".join(esc(s) if isinstance(s, str) else f"<strong>{esc(s['strong'])}</strong>" for s in spans)


def _html_cell(c: str | dict[str, str], folder: Path) -> str:
    if isinstance(c, str):
        return esc(c)
    name = c["image"]
    data = read_png(folder / name)
    if data is None:
        return f"{esc(name)} <span class=missing>(not found)</span>"
    return img_tag(data, name, "figure", name, "thumb") + f"<div class=small>{esc(name)}</div>"


def to_html(blocks: Sequence[Block], folder: Path, first_heading: int = 1) -> str:
    """The blocks as HTML; pictures are read from ``folder`` and embedded as ``data:`` URIs (a
    missing one is said so in red). A level-1 heading becomes ``<h{first_heading}>``, so a page
    can sit under the headings of the page that holds it."""
    out = []
    for b in blocks:
        if b["kind"] == "heading":
            level = max(1, min(6, b["level"] + first_heading - 1))
            out.append(f"<h{level}>{esc(b['text'])}</h{level}>")
        elif b["kind"] == "text":
            out.append(f"<p>{_html_inline(b['text'])}</p>")
        elif b["kind"] == "table":
            width = max([len(b["header"]), *(len(r) for r in b["rows"])])
            head = [_html_cell(c, folder) for c in b["header"]] + [""] * (width - len(b["header"]))
            rows = [[_html_cell(c, folder) for c in r] + [""] * (width - len(r)) for r in b["rows"]]
            out.append(html_table(head, rows, "doc"))
        else:
            pics = []
            for i in b["images"]:
                data = read_png(folder / i["file"])
                caption = i.get("caption") or i["file"]
                if data is None:
                    pics.append(f"<span class=missing>[picture {esc(i['file'])} not found]</span>")
                else:
                    pics.append(figure_tag(data, caption, "figure", i["file"]))
            out.append("<div class=pics>" + "".join(pics) + "</div>")
    return "\n".join(out)


def write_page(folder: Path, summary: dict[str, Any], doc: Page) -> None:
    """Write a figure's summary.json, with ``doc`` under ``"document"`` beside its numbers, and
    the markdown rendering of ``doc`` to its ``file``, both into ``folder``."""
    (folder / "summary.json").write_text(json.dumps({**summary, "document": doc}, indent=2))
    (folder / doc["file"]).write_text(to_markdown(doc["blocks"]))
