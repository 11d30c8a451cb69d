"""The report's numbers: one row per model (reference, cuts, healed) with its evaluation, parameters
and size on disk; how much of the loss gap each healed model recovers; which strategy and which
healing method won.

Gap recovered = (loss_cut - loss_healed) / (loss_cut - loss_ref): 0 when healing did nothing, 1 when
the healed model is as good as the reference, on the validation loss every model was evaluated on
(``loss/nll`` of ``downcycle eval``). The control (the reference trained the same way) is listed with
the healed models, without a gap: what it gains is what training on the corpus gives an uncut model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import table_rows
from .experiment import Experiment, Model
from .paired import pooled_inside

__all__ = ["Summary", "cut_strategy", "gap_recovered", "summarize", "weights_on_disk"]
LOSS = ("loss", "nll")  # (task, metric) of the validation loss


@dataclass
class Summary:
    reference: str | None
    columns: list[str]  # "task/metric" columns of the evaluation results
    rows: list[dict[str, Any]]  # one per model: name, role, strategy, method, parameters, bytes, columns...
    healed: list[dict[str, Any]]  # per healed model (and control): name, role, cut, strategy, method, tokens, loss, loss_cut, loss_ref, recovered
    verdicts: list[str] = field(default_factory=list)  # sentences: which strategy and method won


def weights_on_disk(path: Path) -> int:
    """Bytes of the model's weight files (``*.safetensors`` at the top level, adapters excluded)."""
    return sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))


def parameter_count(path: Path) -> int | None:
    """Parameters stored in the checkpoint, from the safetensors headers (no weights read)."""
    from ..checkpoint import open_checkpoint
    from ..errors import DowncycleError

    try:
        total = 0
        for info in open_checkpoint(Path(path)).tensors.values():
            n = 1
            for d in info.shape:
                n *= d
            total += n
        return total
    except (DowncycleError, OSError):  # a model we cannot read is shown without a count, not a crash
        return None


def cut_strategy(exp: Experiment, model: Model) -> str | None:
    """How a cut (or the cut a healed model came from) chose its layers, as its manifest says."""
    if model.role == "healed" and model.parent is not None and any(m.name == model.parent for m in exp.models):
        return cut_strategy(exp, exp.model(model.parent))
    if model.role != "cut" or model.stage is None:
        return None
    cfg, out = model.stage.manifest["config"], model.stage.manifest.get("outputs", {})
    if cfg.get("plan"):
        from ..errors import DowncycleError
        from ..surgery.plan import load_plan

        try:
            return load_plan(Path(cfg["plan"])).strategy or "plan"
        except DowncycleError:  # the plan file was moved or deleted since the cut
            return "plan"
    if cfg.get("keep"):
        return cfg.get("strategy")
    kept = out.get("kept_layers") or []
    spec = f"layers {cfg.get('layers') or out.get('layers_spec')}" if cfg.get("layers") else f"drop {cfg.get('drop')}"
    return f"first ({spec})" if kept == list(range(len(kept))) else spec


def _loss(model: Model | None) -> float | None:
    if model is None or model.results is None or LOSS[0] not in model.results.tasks:
        return None
    m = model.results.tasks[LOSS[0]].metrics.get(LOSS[1])
    return m.value if m else None


def gap_recovered(loss_cut: float, loss_healed: float, loss_ref: float) -> float | None:
    """(loss_cut - loss_healed) / (loss_cut - loss_ref); None when the cut lost nothing to recover."""
    gap = loss_cut - loss_ref
    return (loss_cut - loss_healed) / gap if gap > 0 else None


def summarize(exp: Experiment) -> Summary:
    order = {"reference": 0, "control": 1, "cut": 2, "healed": 3}
    models = sorted(exp.models, key=lambda m: order[m.role])
    refs = exp.by_role("reference")
    reference = refs[0] if refs else None
    evaluated = [m for m in models if m.results is not None]
    columns: list[str] = []
    by_name: dict[str, dict] = {}
    if evaluated:
        for m in evaluated:
            m.results.model.name = m.name  # the experiment's names, not the eval stage's directory names
        ref_name = reference.name if reference is not None and reference.results is not None else evaluated[0].name
        columns, rows = table_rows([m.results for m in evaluated], ref_name)
        hidden = pooled_inside([m.results for m in evaluated])
        columns = [c for c in columns if c.split("/")[0] not in hidden]  # a group's subtasks are in compare/, not here
        by_name = {r["model"]: r for r in rows}
    rows = []
    for m in models:
        row = {"model": m.name, "role": m.role, "strategy": cut_strategy(exp, m), "method": m.method, "path": str(m.path),
               "bytes": weights_on_disk(m.path) if m.path.is_dir() else None}
        row.update({k: v for k, v in by_name.get(m.name, {}).items() if k != "model"})
        if row.get("parameters") is None:
            row["parameters"] = parameter_count(m.path) if m.path.is_dir() else None
        rows.append(row)
    healed = []
    for m in exp.by_role("control") + exp.by_role("healed"):
        parent = next((p for p in exp.models if p.name == m.parent), None) if m.role == "healed" else None
        lc, lh, lr = _loss(parent), _loss(m), _loss(reference)
        healed.append({"model": m.name, "role": m.role, "cut": m.parent, "strategy": cut_strategy(exp, m), "method": m.method,
                       "tokens": (m.stage.manifest.get("outputs") or {}).get("tokens") if m.stage else None,
                       "loss": lh, "loss_cut": lc, "loss_ref": lr,
                       "recovered": gap_recovered(lc, lh, lr) if None not in (lc, lh, lr) else None})
    return Summary(reference.name if reference else None, columns, rows, healed, _verdicts(exp, healed))


def _verdicts(exp: Experiment, healed: list[dict]) -> list[str]:
    """Plain sentences naming the winners, each with the numbers it rests on."""
    out = []
    cuts = [(m, _loss(m)) for m in exp.by_role("cut") if _loss(m) is not None]
    if len(cuts) > 1:
        best, loss = min(cuts, key=lambda p: p[1])
        others = ", ".join(f"{m.name} ({cut_strategy(exp, m)}) {v:.4f}" for m, v in cuts if m is not best)
        out.append(f"Before healing, strategy **{cut_strategy(exp, best)}** won: {best.name} has validation loss {loss:.4f} "
                   f"(vs {others}).")
    for c in (h for h in healed if h["role"] == "control" and h["loss"] is not None and h["loss_ref"] is not None):
        out.append(f"Control **{c['model']}** (the uncut reference trained by {c['method']}"
                   + (f" on {c['tokens']:,} tokens" if c["tokens"] else "") + f"): validation loss {c['loss_ref']:.4f} -> "
                   f"{c['loss']:.4f}: what training on this corpus gives a model that was never cut; read the healed models against it "
                   "as well as against the reference.")
    scored = [h for h in healed if h["loss"] is not None and h["role"] == "healed"]
    if scored:
        best = min(scored, key=lambda h: h["loss"])
        rec = f", recovering {best['recovered']:.0%} of the gap between {best['cut']} and the reference" if best["recovered"] is not None else ""
        out.append(f"After healing, **{best['model']}** is best: strategy **{best['strategy']}**, method **{best['method']}**, "
                   f"validation loss {best['loss']:.4f}{rec}.")
        for cut in dict.fromkeys(h["cut"] for h in scored):  # methods compared on the same cut only
            same = [h for h in scored if h["cut"] == cut]
            if len(same) > 1:
                win = min(same, key=lambda h: h["loss"])
                rest = ", ".join(f"{h['method']} {h['loss']:.4f}" for h in same if h is not win)
                out.append(f"On {cut}, method **{win['method']}** won: {win['loss']:.4f} (vs {rest}).")
        strategies: dict[str, dict] = {}
        for h in scored:
            if h["strategy"] is not None and (h["strategy"] not in strategies or h["loss"] < strategies[h["strategy"]]["loss"]):
                strategies[h["strategy"]] = h
        if len(strategies) > 1:
            win = min(strategies.values(), key=lambda h: h["loss"])
            rest = ", ".join(f"{s} {h['loss']:.4f}" for s, h in strategies.items() if h is not win)
            out.append(f"Across strategies after healing (best run of each), **{win['strategy']}** won: {win['loss']:.4f} (vs {rest}).")
    return out
