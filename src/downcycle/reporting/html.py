"""``report.html``: one self-contained file that opens offline: inline CSS, pictures embedded as
base64 ``data:`` URIs, no scripts, fonts or links to anything outside the file."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from .figures import Figure
from .item_paired import ITEM_NOTE
from .markdown import GAP_NOTE, ITEMS_HEADING, ITEMS_LEAD, PAIRED_NOTE
from .summary import Summary
from .tables import healed_table, model_table

__all__ = ["render_html"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1d2430; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #3b6ea8; padding-bottom: .3em; }
h2 { margin-top: 1.8em; color: #23466e; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #c8d0da; padding: 4px 9px; text-align: right; }
th { background: #eef2f7; }
td:first-child, th:first-child, .text { text-align: left; }
tr.reference td { background: #f4f8ec; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #e1e5ea; }
figcaption { font-size: 13px; color: #505a66; }
.verdict li { margin: .3em 0; }
.sample { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; white-space: pre-wrap; }
.prompt { color: #7a8593; }
.note { font-size: 13px; color: #505a66; }
"""


def _table(head: list[str], rows: list[list[str]], roles: list[str] | None = None) -> str:
    e = html.escape
    parts = ["<table>", "<tr>" + "".join((f'<th class="text">{e(h)}</th>' if j < 3 else f"<th>{e(h)}</th>") for j, h in enumerate(head)) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{e(roles[i])}"' if roles else ""
        cells = "".join((f'<td class="text">{e(c)}</td>' if j < 3 else f"<td>{e(c)}</td>") for j, c in enumerate(row))
        parts.append(f"<tr{cls}>{cells}</tr>")
    return "\n".join(parts + ["</table>"])


def _bold(text: str) -> str:
    """The verdicts' Markdown ``**bold**`` as <b>, everything else escaped."""
    pieces = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(pieces))


def _figure(directory: Path, f: Figure) -> str:
    data = base64.b64encode((directory / f.file).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{html.escape(f.title)}</b>. {html.escape(f.caption)}</figcaption></figure>")


def render_html(title: str, summary: Summary, analysis: list[Figure], losses: list[Figure], samples: dict[str, Any] | None,
                figure_dir: Path, notes: list[str], benchmarks: list[Figure] = (),
                paired: tuple[list[str], list[list[str]]] | None = None,
                items: tuple[list[str], list[list[str]]] | None = None) -> str:
    """The whole report; the PNGs are read from ``figure_dir`` and embedded (``benchmarks``, ``paired``,
    ``items``: as for :func:`~.markdown.render_markdown`)."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if summary.verdicts:
        out += ["<h2>Verdict</h2>", '<ul class="verdict">'] + [f"<li>{_bold(v)}</li>" for v in summary.verdicts] + ["</ul>"]
    out += ["<h2>Models</h2>", _table(*model_table(summary), roles=[r["role"] for r in summary.rows]),
            '<p class="note">Parameters as evaluated (tied embeddings counted once); weights on disk: the <code>*.safetensors</code> files.</p>']
    if summary.healed:
        out += ["<h2>Healing</h2>", _table(*healed_table(summary)), f'<p class="note">{e(GAP_NOTE)}</p>']
    if benchmarks or (paired and paired[1]) or (items and items[1]):
        out += ["<h2>Benchmarks</h2>"] + [_figure(figure_dir, f) for f in benchmarks]
        if paired and paired[1]:
            out += ["<h3>Paired comparison</h3>", f'<p class="note">{e(PAIRED_NOTE)}</p>', _table(*paired)]
        if items and items[1]:
            out += [f"<h3>{e(ITEMS_HEADING)}</h3>", f'<p class="note">{e(ITEMS_LEAD + " " + ITEM_NOTE)}</p>', _table(*items)]
    for heading, figures in (("Layer analysis", analysis), ("Loss curves", losses)):
        if figures:
            out += [f"<h2>{heading}</h2>"] + [_figure(figure_dir, f) for f in figures]
    if samples and samples.get("models"):
        out += ["<h2>Sample generations</h2>",
                f'<p class="note">Greedy decoding, {samples["new_tokens"]} new tokens at most; the same prompts for every model.</p>']
        for i, prompt in enumerate(samples["prompts"]):
            out += [f"<h3>“{e(prompt)}”</h3>", "<table>", "<tr><th>model</th><th>continuation</th></tr>"]
            for name, entry in samples["models"].items():
                text = entry["texts"][i] if "texts" in entry else f"(not generated: {entry.get('error')})"
                out.append(f'<tr><td>{e(name)}</td><td class="text sample"><span class="prompt">{e(prompt)}</span>{e(text)}</td></tr>')
            out.append("</table>")
    if notes:
        out += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{e(n)}</li>" for n in notes] + ["</ul>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"
