"""``width_plan.json``: which MLP neurons, query heads, KV heads and embedding channels a width prune
keeps, chosen from importance scores (``scores.json``, see ``downcycle analyze --width``) or written
by hand. No torch here.

Every layer keeps the same number of each (the output is the same architecture, with smaller
sizes in its config); query heads are chosen within their KV group, so every kept group keeps the
same count (GQA), and the embedding channels are one set for the whole model (the residual stream).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..architecture import FFN, HEADS, HIDDEN, KV_HEADS
from ..artifacts.atomic import write_atomic
from ..errors import DowncycleError
from ..jsonfile import read_json

WIDTH_PLAN_NAME = "width_plan.json"
SCORES_KIND = "width-importance"
# the option that sets each size, for messages
OPTION = {FFN: "--ffn", HEADS: "--heads", KV_HEADS: "--kv-heads", HIDDEN: "--hidden"}

__all__ = ["OPTION", "SCORES_KIND", "WIDTH_PLAN_NAME", "WidthPlan", "check_plan", "load_width_plan", "save_width_plan", "select_width"]


@dataclass(frozen=True)
class WidthPlan:
    """Kept indices, sorted. Per source layer (all of them, also layers a depth cut drops):
    ``ffn`` neurons, ``heads`` query heads, ``kv_heads`` KV heads; ``hidden``: the embedding channels
    kept everywhere. None: that axis is not pruned (``kv_heads`` None with ``heads`` given: every KV
    head kept, unless the model has one KV head per query head, where they go together)."""

    ffn: list[list[int]] | None = None
    heads: list[list[int]] | None = None
    kv_heads: list[list[int]] | None = None
    hidden: list[int] | None = None

    def kept(self, kind: str, layer: int) -> list[int] | None:
        """The kept units of ``kind`` in source layer ``layer`` (None: all)."""
        value = getattr(self, kind)
        return value if kind == HIDDEN or value is None else value[layer]


def _top(scores: list[float], k: int) -> list[int]:
    """The ``k`` highest-scoring indices, ties broken by the lower index, sorted."""
    return sorted(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k])


def _check_size(kind: str, value: int | None, full: int, what: str) -> None:
    if value is not None and not 1 <= value <= full:
        raise DowncycleError(f"{OPTION[kind]} {value}: must be between 1 and the model's {full} ({what})")


def _scores_table(scores: dict[str, Any], key: str, layers: int, width: int) -> list[list[float]]:
    table = scores.get(key)
    if not (isinstance(table, list) and len(table) == layers and all(isinstance(r, list) and len(r) == width for r in table)):
        raise DowncycleError(f"scores: '{key}' must hold {layers} lists of {width} numbers (one per layer)")
    return table


def select_width(scores: dict[str, Any], *, ffn: int | None, heads: int | None, kv_heads: int | None,
                 hidden: int | None) -> WidthPlan:
    """The plan keeping the most important units of a ``scores.json`` dict, at the given sizes
    (None: that axis is not pruned). Top-k by importance, ties broken by the lower index; query
    heads are ranked within their KV group, which keep ``heads / kv_heads`` each. Without
    ``kv_heads``, every KV head is kept, except in a model with one KV head per query head, where
    the kept query heads are the kept KV heads.

    Raises:
        DowncycleError: for scores that are not a width-importance dict, or sizes out of range, or
            ``heads`` not a multiple of the kept KV heads.
    """
    if not isinstance(scores, dict) or scores.get("kind") != SCORES_KIND:
        raise DowncycleError(f"scores: not a {SCORES_KIND} scores.json (written by `downcycle analyze --width`)")
    try:
        n, f, h, d = (int(scores[k]) for k in ("num_layers", "intermediate_size", "num_attention_heads", "hidden_size"))
    except (KeyError, TypeError, ValueError) as e:
        raise DowncycleError(f"scores: missing or invalid size field {e}") from None
    kv = int(scores.get("num_key_value_heads") or h)
    for kind, value, full, what in ((FFN, ffn, f, "intermediate_size"), (HEADS, heads, h, "num_attention_heads"),
                                    (KV_HEADS, kv_heads, kv, "num_key_value_heads"), (HIDDEN, hidden, d, "hidden_size")):
        _check_size(kind, value, full, what)
    plan: dict[str, Any] = {}
    if ffn is not None:
        plan[FFN] = [_top(row, ffn) for row in _scores_table(scores, "ffn", n, f)]
    if hidden is not None:
        table = scores.get("hidden")
        if not (isinstance(table, list) and len(table) == d):
            raise DowncycleError(f"scores: 'hidden' must be a list of {d} numbers")
        plan[HIDDEN] = _top(table, hidden)
    if kv_heads is None and heads is not None and kv == h:
        kv_heads = heads  # one KV head per query head: they are pruned together
    if heads is not None or kv_heads is not None:
        group = h // kv
        kept_kv = kv_heads or kv
        per = (heads if heads is not None else kept_kv * group) / kept_kv
        if per != int(per) or per > group:
            raise DowncycleError(f"--heads {heads}: must be a multiple of the {kept_kv} kept KV heads, at most {group} per KV head "
                                 f"({h} query heads share {kv} KV heads)")
        head_rows = _scores_table(scores, "heads", n, h)
        if group == 1:  # one KV head per query head: a KV head is as important as its query head
            kv_rows = head_rows
        elif kv_heads is not None and kv_heads < kv:
            kv_rows = _scores_table(scores, "kv_heads", n, kv)
        else:
            kv_rows = [[0.0] * kv] * n
        plan[HEADS], kv_plan = [], []
        for head_row, kv_row in zip(head_rows, kv_rows):
            groups = _top(kv_row, kept_kv)
            kv_plan.append(groups)
            plan[HEADS].append(sorted(g * group + i for g in groups for i in _top(head_row[g * group:(g + 1) * group], int(per))))
        if kv_heads is not None:
            plan[KV_HEADS] = kv_plan
    return WidthPlan(**plan)


def check_plan(plan: WidthPlan, sizes: dict[str, int], num_layers: int, where: str = "width plan") -> WidthPlan:
    """Check ``plan`` against a model's sizes and layer count, and complete it: with ``kv_heads``
    given and ``heads`` not, the kept groups keep all their query heads.

    Raises:
        DowncycleError: naming the first problem (a layer count, an index out of range, unsorted
            or repeated indices, counts that differ between layers, a KV group whose kept query
            heads differ in number from another's or lie outside the kept groups).
    """
    h = sizes[HEADS]
    kv = sizes.get(KV_HEADS, h)
    per_layer = {}
    for kind in (FFN, HEADS, KV_HEADS):
        rows = getattr(plan, kind)
        if rows is None:
            continue
        full = kv if kind == KV_HEADS else sizes[kind]
        if not isinstance(rows, list) or len(rows) != num_layers:
            raise DowncycleError(f"{where}: '{kind}' must hold one list per source layer ({num_layers}), not {_count(rows)}")
        for i, row in enumerate(rows):
            _check_indices(row, full, f"{where}: '{kind}' of layer {i}")
            if len(row) != len(rows[0]):
                raise DowncycleError(f"{where}: '{kind}' keeps {len(rows[0])} in layer 0 but {len(row)} in layer {i}; "
                                     "every layer keeps the same number")
        per_layer[kind] = rows
    if plan.hidden is not None:
        _check_indices(plan.hidden, sizes[HIDDEN], f"{where}: 'hidden'")
    kv_rows, head_rows = per_layer.get(KV_HEADS), per_layer.get(HEADS)
    if kv == h and kv_rows is None and head_rows is not None:  # one KV head per query head: they go together
        kv_rows = head_rows
    if kv_rows is not None and head_rows is None:
        group = h // kv
        head_rows = [[g * group + i for g in row for i in range(group)] for row in kv_rows]
    if head_rows is not None:
        group = h // kv
        for i, row in enumerate(head_rows):
            groups = kv_rows[i] if kv_rows is not None else list(range(kv))
            counts = {g: sum(1 for q in row if q // group == g) for g in range(kv)}
            if any(counts[g] != len(row) // len(groups) for g in groups) or sum(counts[g] for g in groups) != len(row):
                raise DowncycleError(f"{where}: the query heads {row} of layer {i} are not the same number in each of the kept "
                                     f"KV groups {groups} ({group} query heads per KV head)")
    return WidthPlan(plan.ffn, head_rows, kv_rows, plan.hidden)


def _count(rows: Any) -> str:
    return str(len(rows)) if isinstance(rows, list) else type(rows).__name__


def _check_indices(row: Any, full: int, what: str) -> None:
    if not isinstance(row, list) or not row or not all(isinstance(i, int) and not isinstance(i, bool) for i in row):
        raise DowncycleError(f"{what}: must be a non-empty list of indices")
    if row != sorted(set(row)):
        raise DowncycleError(f"{what}: indices must be sorted and distinct")
    if row[0] < 0 or row[-1] >= full:
        raise DowncycleError(f"{what}: index {row[-1] if row[-1] >= full else row[0]} is out of range 0-{full - 1}")


def save_width_plan(plan: WidthPlan, path: Path) -> None:
    """Write ``plan`` as JSON (temporary file, then rename)."""
    write_atomic(Path(path), json.dumps({"kind": "width-plan", **asdict(plan)}) + "\n")


def load_width_plan(path: Path) -> WidthPlan:
    """Read a ``width_plan.json``; a missing file, bad JSON or a field of the wrong shape is a
    one-line error (the plan is checked against the model by :func:`check_plan`)."""
    doc = read_json(Path(path), "expected a width_plan.json written by `downcycle prune`")
    if not isinstance(doc, dict) or doc.get("kind", "width-plan") != "width-plan":
        raise DowncycleError(f"{path}: not a width plan (a JSON object with ffn, heads, kv_heads, hidden)")
    unknown = sorted(set(doc) - {"kind", FFN, HEADS, KV_HEADS, HIDDEN})
    if unknown:
        raise DowncycleError(f"{path}: unknown field {unknown[0]!r} (a width plan has ffn, heads, kv_heads, hidden)")
    if all(doc.get(k) is None for k in (FFN, HEADS, KV_HEADS, HIDDEN)):
        raise DowncycleError(f"{path}: the plan prunes nothing (ffn, heads, kv_heads and hidden are all missing)")
    return WidthPlan(doc.get(FFN), doc.get(HEADS), doc.get(KV_HEADS), doc.get(HIDDEN))
