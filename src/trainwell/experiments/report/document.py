"""The report as a small document: sections of blocks (text, bullets, tables, figures, key numbers), rendered
to Markdown (figures as relative links) and to one self-contained HTML file (figures as data URIs, styles
inline, no script and nothing fetched: it opens offline in any browser).

Text may use ``**bold**``, ``*italic*`` and ```code```; everything else is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    align: list[str] | None = None  # "l" or "r" per column (default: first left, others right)
    swatches: list[str | None] | None = None  # a colour dot before the first cell of each row
    id: str | None = None  # the HTML table's id (e.g. "results")
    note: str = ""


@dataclass
class Figure:
    path: Path  # a PNG file inside the experiment folder
    caption: str = ""


@dataclass
class KeyNumbers:
    """A row of headline numbers: (label, value, note)."""

    items: list[tuple[str, str, str]]


@dataclass
class Answer:
    """A question and its answer, derived from the numbers: a one-word verdict and the evidence."""

    question: str
    verdict: str
    evidence: list[str]
    tone: str = "neutral"  # "good", "bad" or "neutral": colours the verdict


Block = Text | Bullets | Table | Figure | KeyNumbers | Answer


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


# --- Markdown ------------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, subtitle: str, sections: list[Section], root: Path) -> str:
    """The report as Markdown; figure paths relative to ``root`` (the folder report.md is written to)."""
    out = [f"# {title}", ""]
    if subtitle:
        out += [subtitle, ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                out += [block.text, ""]
            elif isinstance(block, Bullets):
                out += [f"- {item}" for item in block.items] + [""]
            elif isinstance(block, KeyNumbers):
                out += [
                    f"- **{label}:** {value}" + (f" ({note})" if note else "")
                    for label, value, note in block.items
                ]
                out.append("")
            elif isinstance(block, Answer):
                out += [f"**{block.question}** {block.verdict}.", ""]
                out += [f"- {line}" for line in block.evidence] + [""]
            elif isinstance(block, Table):
                align = block.align or ["l"] + ["r"] * (len(block.columns) - 1)
                out.append("| " + " | ".join(_md_cell(c) for c in block.columns) + " |")
                out.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
                out.append("")
                if block.note:
                    out += [block.note, ""]
            elif isinstance(block, Figure):
                rel = block.path.relative_to(root) if block.path.is_relative_to(root) else block.path
                out += [f"![{block.caption}]({rel.as_posix()})", ""]
                if block.caption:
                    out += [f"*{block.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


# --- HTML ----------------------------------------------------------------------------------------------------


def inline(text: str) -> str:
    """Escape ``text`` for HTML, then turn ``**bold**``, ``*italic*`` and ```code``` into tags."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", text)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_block(block: Block) -> str:
    if isinstance(block, Text):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, KeyNumbers):
        cards = "".join(
            f'<div class="card"><div class="label">{inline(label)}</div><div class="value">{inline(value)}</div>'
            f'<div class="note">{inline(note)}</div></div>'
            for label, value, note in block.items
        )
        return f'<div class="cards">{cards}</div>'
    if isinstance(block, Answer):
        evidence = "".join(f"<li>{inline(line)}</li>" for line in block.evidence)
        return (
            f'<div class="answer"><div class="q">{inline(block.question)}</div>'
            f'<div class="verdict {block.tone}">{inline(block.verdict)}</div><ul>{evidence}</ul></div>'
        )
    if isinstance(block, Table):
        align = block.align or ["l"] + ["r"] * (len(block.columns) - 1)
        head = "".join(f'<th class="{a}">{inline(c)}</th>' for c, a in zip(block.columns, align, strict=True))
        rows = []
        for i, row in enumerate(block.rows):
            cells = []
            for j, (cell, a) in enumerate(zip(row, align, strict=True)):
                dot = ""
                if j == 0 and block.swatches and block.swatches[i]:
                    dot = f'<span class="dot" style="background:{block.swatches[i]}"></span>'
                cells.append(f'<td class="{a}">{dot}{inline(cell)}</td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
        ident = f' id="{block.id}"' if block.id else ""
        note = f'<p class="tnote">{inline(block.note)}</p>' if block.note else ""
        return (
            f'<div class="twrap"><table{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            f"</tbody></table></div>{note}"
        )
    if isinstance(block, Figure):
        caption = f"<figcaption>{inline(block.caption)}</figcaption>" if block.caption else ""
        alt = html.escape(block.caption or block.path.stem)
        return f'<figure><img src="{_data_uri(block.path)}" alt="{alt}">{caption}</figure>'
    raise TypeError(f"unknown report block {type(block).__name__}")


CSS = """
:root { --ink:#1d2330; --muted:#5b6474; --line:#e3e6ec; --bg:#f6f7f9; --card:#ffffff; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 16px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans", "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1060px; margin: 0 auto; padding: 40px 28px 64px; }
header h1 { font-size: 2.1rem; line-height:1.2; margin: 0 0 6px; letter-spacing:-0.01em; }
header .sub { color: var(--muted); margin: 0 0 4px; max-width: 60em; }
header .meta { color: var(--muted); font-size: .88rem; }
.pill { display:inline-block; font-size:.75rem; font-weight:600; letter-spacing:.04em; text-transform:uppercase;
  padding:2px 9px; border-radius:999px; background:#fff3d6; color:#8a5a00; vertical-align: middle; margin-left:8px; }
nav { margin: 18px 0 8px; font-size:.9rem; }
nav a { color: var(--accent); text-decoration:none; margin-right: 16px; white-space: nowrap; }
section { background: var(--card); border:1px solid var(--line); border-radius: 12px; padding: 22px 26px;
  margin: 22px 0; }
section h2 { font-size: 1.3rem; margin: 0 0 12px; }
p { margin: 8px 0 12px; }
ul { margin: 6px 0 12px; padding-left: 1.3em; }
li { margin: 3px 0; }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; margin: 8px 0 4px; }
.card { border:1px solid var(--line); border-radius:10px; padding: 12px 14px; background:#fbfcfd; }
.card .label { color:var(--muted); font-size:.8rem; text-transform:uppercase; letter-spacing:.05em; }
.card .value { font-size: 1.45rem; font-weight: 650; margin: 2px 0; font-variant-numeric: tabular-nums; }
.card .note { color:var(--muted); font-size:.85rem; }
.twrap { overflow-x:auto; }
table { border-collapse: collapse; width: 100%; font-size: .93rem; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 9px; border-bottom: 1px solid var(--line); }
td:first-child { white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: .76rem; text-transform: uppercase; letter-spacing: .04em;
  border-bottom: 2px solid var(--line); vertical-align: bottom; }
th.r { white-space: normal; }
tbody tr:nth-child(even) { background: #fafbfc; }
.l { text-align: left; } .r { text-align: right; white-space: nowrap; }
.dot { display:inline-block; width:11px; height:11px; border-radius:50%; margin-right:8px; vertical-align: baseline; }
.tnote { color: var(--muted); font-size: .85rem; }
figure { margin: 14px 0 6px; }
figure img { width: 100%; height: auto; display:block; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: 6px; }
.answer { border-left: 4px solid var(--line); padding: 4px 0 4px 14px; margin: 14px 0; }
.answer .q { font-weight: 650; }
.verdict { display:inline-block; font-weight: 650; margin: 2px 0 0; }
.verdict.good { color: #0a7d4f; } .verdict.bad { color: #b3261e; } .verdict.neutral { color: var(--muted); }
code { font: .88em ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; background: #eef0f4;
  padding: 1px 5px; border-radius: 4px; }
footer { color: var(--muted); font-size: .82rem; text-align:center; margin-top: 28px; }
"""


def render_html(title: str, subtitle: str, meta: str, sections: list[Section], badge: str = "") -> str:
    """The report as one self-contained HTML document."""
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)  # spaces: it can wrap
    body = "".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{"".join(_html_block(b) for b in s.blocks)}</section>'
        for s in sections
    )
    pill = f'<span class="pill">{html.escape(badge)}</span>' if badge else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>"
        f'<header><h1>{html.escape(title)}{pill}</h1><p class="sub">{inline(subtitle)}</p>'
        f'<div class="meta">{inline(meta)}</div></header><nav>{nav}</nav>{body}'
        "<footer>Written by trainwell · rebuild with <code>trainwell report</code></footer>"
        "</main></body></html>\n"
    )
