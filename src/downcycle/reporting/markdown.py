"""``report.md``: the experiment report as Markdown, its pictures in ``report/`` referenced relatively."""

from __future__ import annotations

from typing import Any

from .figures import Figure
from .item_paired import ITEM_NOTE
from .summary import Summary
from .tables import healed_table, model_table

__all__ = ["ITEMS_HEADING", "ITEMS_LEAD", "md_table", "render_markdown"]
PAIRED_NOTE = ("Each model against the reference, and each healed model against its cut, on the same items: the mean "
               "per-item difference, its paired standard error, and whether the difference is larger than twice that.")
ITEMS_HEADING = "Paired item metrics, pooled over tasks"
ITEMS_LEAD = ("Accuracy on a few hundred items moves in whole items; these continuous per-item metrics can show a change "
              "of the models' distributions that flips no answer. Each model against the reference, and each healed model "
              "against its cut; per task in compare/compare.md.")
GAP_NOTE = ("Gap recovered = (loss_cut − loss_healed) / (loss_cut − loss_ref) on the validation loss: "
            "0% means healing did nothing, 100% that the healed model matches the reference.")


def md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(title: str, summary: Summary, analysis: list[Figure], losses: list[Figure], samples: dict[str, Any] | None,
                    figure_dir: str, notes: list[str], benchmarks: list[Figure] = (),
                    paired: tuple[list[str], list[list[str]]] | None = None,
                    items: tuple[list[str], list[list[str]]] | None = None) -> str:
    """The whole report; ``figure_dir`` is the pictures' directory relative to the report; ``benchmarks``
    the grouped bar charts, ``paired`` the paired comparison's head and rows, ``items`` those of the
    pooled item metrics (:func:`~.item_paired.item_table`)."""
    out = [f"# {title}", ""]
    if summary.verdicts:
        out += ["## Verdict", ""] + [f"- {v}" for v in summary.verdicts] + [""]
    out += ["## Models", "", md_table(*model_table(summary)), "",
            "Parameters as evaluated (tied embeddings counted once); weights on disk: the `*.safetensors` files.", ""]
    if summary.healed:
        out += ["## Healing", "", md_table(*healed_table(summary)), "", GAP_NOTE, ""]
    if benchmarks or (paired and paired[1]) or (items and items[1]):
        out += ["## Benchmarks", ""]
        for f in benchmarks:
            out += [f"### {f.title}", "", f"![{f.title}]({figure_dir}/{f.file})", "", f.caption, ""]
        if paired and paired[1]:
            out += ["### Paired comparison", "", PAIRED_NOTE, "", md_table(*paired), ""]
        if items and items[1]:
            out += [f"### {ITEMS_HEADING}", "", ITEMS_LEAD + " " + ITEM_NOTE, "", md_table(*items), ""]
    for heading, figures in (("Layer analysis", analysis), ("Loss curves", losses)):
        if figures:
            out += [f"## {heading}", ""]
            for f in figures:
                out += [f"### {f.title}", "", f"![{f.title}]({figure_dir}/{f.file})", "", f.caption, ""]
    if samples and samples.get("models"):
        out += ["## Sample generations", "",
                f"Greedy decoding, {samples['new_tokens']} new tokens at most; the same prompts for every model.", ""]
        for i, prompt in enumerate(samples["prompts"]):
            rows = [[name, entry["texts"][i] if "texts" in entry else f"(not generated: {entry.get('error')})"]
                    for name, entry in samples["models"].items()]
            out += [f"### “{prompt}”", "", md_table(["model", f"{prompt} …"], rows), ""]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)
