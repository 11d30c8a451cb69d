"""The model card: ``README.md`` with YAML front matter, written into every model directory downcycle
produces, from that directory's manifest and the manifests it points to.

It says only what the manifests say: the source checkpoint, the kept layers, the strategy and its
scores when a plan chose them, the healing method and its hyperparameters, the tokens trained, and
evaluation results when given (rendered by :mod:`downcycle.reporting.card`). The licence is inherited
from the source's own card (its front matter's ``license``) and omitted when the source declares
none. No torch import: ``cut`` calls this.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from .atomic import write_atomic
from .manifest import read_manifest

__all__ = ["CARD_NAME", "card_text", "front_matter_license", "write_card"]
CARD_NAME = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Hyperparameters worth a reader's attention, per method (the manifest keeps every field).
_COMMON = ("lr", "schedule", "warmup_steps", "micro_batch", "grad_accum", "max_steps", "max_tokens", "epochs", "weight_decay", "seed")
_BY_METHOD = {"lora": ("lora_r", "lora_alpha", "lora_dropout", "lora_targets"), "qlora": ("lora_r", "lora_alpha", "lora_dropout", "lora_targets"),
              "distill": ("teacher", "distill_loss", "distill_temperature", "distill_alpha")}
_TAGS = {"distill": "distillation"}  # other methods are tagged by their name (lora, qlora, full)


def front_matter_license(readme: Path) -> str | None:
    """The ``license`` of a model card's YAML front matter, or None."""
    try:
        text = Path(readme).read_text(errors="replace")
    except OSError:
        return None
    m = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not m:
        return None
    import yaml

    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return str(value) if isinstance(value, (str, int, float)) and str(value).strip() else None


def _model_name(source: str) -> str:
    """A hub id as it is; a local path by its directory name."""
    return source if _HUB_ID.match(source) and not Path(source).exists() else Path(source.rstrip("/")).name


def _yaml(meta: dict[str, Any]) -> str:
    lines = ["---"]
    for key, value in meta.items():
        if isinstance(value, list):
            lines += [f"{key}:"] + [f"- {json.dumps(v)}" for v in value]
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines + ["---", ""])


def _plan(model_dir: Path, cut_manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The plan a cut was made from: ``--plan`` (while the file still exists) or ``--keep`` (OUT/analysis/plan.json)."""
    cfg = cut_manifest["config"]
    for path in ([Path(cfg["plan"])] if cfg.get("plan") else []) + ([model_dir / "analysis" / "plan.json"] if cfg.get("keep") else []):
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return None


def _cut_lines(model_dir: Path, man: dict[str, Any]) -> list[str]:
    cfg, out = man["config"], man.get("outputs", {})
    kept, total = out.get("kept_layers", []), out.get("source_layers") or out.get("num_source_layers")
    of = f" of {total}" if total else ""
    lines = [(f"- **Cut** from `{cfg['source']}` by `downcycle cut`: kept {len(kept)}{of} decoder layers "
              f"(source layers {out.get('layers_spec') or kept}), copied unchanged; embeddings, final norm and LM head kept.")]
    if out.get("dropped_layers"):
        lines.append(f"  - Dropped layers: {out['dropped_layers']}.")
    plan = _plan(model_dir, man)
    if plan is not None:
        details = plan.get("details") or {}
        lines.append(f"  - Layers chosen by `downcycle analyze`, strategy `{plan.get('strategy')}`"
                     + (f", metric `{details['metric']}`" if details.get("metric") else "") + ".")
        if details.get("score_of_choice") is not None:
            lines.append(f"  - Score of the choice: `{json.dumps(details['score_of_choice'])}`.")
    elif cfg.get("layers"):
        lines.append(f"  - Layers given explicitly: `--layers {cfg['layers']}`.")
    elif cfg.get("drop"):
        lines.append(f"  - Layers given explicitly: `--drop {cfg['drop']}`.")
    return lines


_WIDTH_NAMES = {"ffn": "MLP neurons", "heads": "query heads", "kv_heads": "KV heads", "hidden": "hidden channels"}


def _prune_lines(man: dict[str, Any]) -> list[str]:
    cfg, out = man["config"], man.get("outputs", {})
    before, after = out.get("sizes_before", {}), out.get("sizes_after", {})
    sizes = ", ".join(f"{name} {before[k]} -> {after[k]}" for k, name in _WIDTH_NAMES.items() if k in before and k in after)
    how = f"`--plan {cfg['plan']}`" if cfg.get("plan") else f"`--scores {cfg['scores']}`" if cfg.get("scores") else \
        f"importance measured on `{cfg.get('data')}`"
    lines = [(f"- **Pruned** from `{cfg['source']}` by `downcycle prune`: {sizes} (the same in every layer); "
             f"{len(out.get('kept_layers', []))} of {out.get('source_layers')} decoder layers kept; "
             f"parameters {out.get('parameters_before', 0):,} -> {out.get('parameters_after', 0):,}."),
             f"  - Kept units chosen by {how}; listed in `{out.get('width_plan', 'width_plan.json')}`."]
    return lines + [f"  - Note: {note}." for note in out.get("config_notes", [])]


def _train_lines(man: dict[str, Any]) -> list[str]:
    cfg, out = man["config"], man.get("outputs", {})
    method = cfg.get("method")
    lines = [f"- **Trained** by `downcycle train --method {method}` from `{man['inputs'].get('model', {}).get('source')}`"
             + (f" on {out['tokens']:,} tokens ({out.get('steps')} optimizer steps of {out.get('global_batch_sequences')} "
                f"sequences x {out.get('seq_len')} tokens)" if out.get("tokens") else "") + "."]
    hyper = {k: cfg[k] for k in _COMMON + _BY_METHOD.get(method, ()) if cfg.get(k) is not None}
    lines.append("  - Hyperparameters: " + ", ".join(f"`{k}={v}`" for k, v in hyper.items()) + ".")
    if out.get("val_loss") is not None:
        start = f" (from {out['val_loss_start']:.4f} before training)" if out.get("val_loss_start") is not None else ""
        lines.append(f"  - Validation loss at the end of training: {out['val_loss']:.4f} nats/token{start}.")
    if out.get("trainable_parameters") and out.get("parameters"):
        lines.append(f"  - Trainable parameters: {out['trainable_parameters']:,} of {out['parameters']:,}.")
    return lines


def _heal_lines(man: dict[str, Any]) -> list[str]:
    cfg, out = man["config"], man.get("outputs", {})
    calib = out.get("calibration", {})
    what = {"linear": "linear replacement (a least-squares map per gap, folded into the down projection of the kept layer "
                      "before it; ReplaceMe, arXiv 2505.02819)",
            "layer": "layer replacement (one decoder layer per gap, trained alone on the reference's states entering and "
                     "leaving the gap; LLM-Streamline, arXiv 2403.19135)"}.get(cfg.get("method"), cfg.get("method"))
    lines = [f"- **Healed** by `downcycle heal --method {cfg.get('method')}`: {what}; source layers "
             f"{out.get('layers_spec')} of {out.get('source_layers')}; calibration: {calib.get('tokens', 0):,} tokens of `{calib.get('source')}`."]
    for g in out.get("gaps", []):
        if "residual_after" in g:
            lines.append(f"  - Gap {g['gap']} (after layer {g['after_layer']}): residual per token {g['residual_before']:.4g} -> "
                         f"{g['residual_after']:.4g} (lambda {g['lambda']:.3g}).")
        else:
            lines.append(f"  - Gap {g['gap']}: one layer (from layer {g.get('init_layer')}) for {g.get('replaces')}, trained "
                         f"{g.get('epochs')} epochs with the {g.get('loss')} loss; held-out {g.get('loss')} "
                         f"{g['held_out_before']['loss']:.4g} -> {g['held_out_after']['loss']:.4g}.")
    return lines


def _datasets(man: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(hub dataset ids, every source) of the corpus a train stage read, from the corpus's manifest."""
    data = man["inputs"].get("data", {})
    corpus = read_manifest(Path(data["path"])) if data.get("path") and Path(data["path"]).is_dir() else None
    sources = [str(s) for s in (corpus or {}).get("inputs", {}).get("sources", [])]
    ids = [s.removeprefix("hf:").split("@")[0] for s in sources if s.startswith("hf:")]
    return ids, sources


_MODEL_STAGES = ("cut", "prune", "heal", "train")


def card_text(model_dir: Path, evaluation: Sequence[str] = ()) -> str:
    """The card of ``model_dir`` (a ``cut`` or ``train`` output).

    Args:
        evaluation: the lines of an ``## Evaluation`` section (the report renders them from a
            ``results.json``); none: no such section.
    """
    model_dir = Path(model_dir)
    man = read_manifest(model_dir)
    if man is None or man.get("stage") not in _MODEL_STAGES:
        raise DowncycleError(f"{model_dir}: no downcycle.json of a cut, prune, heal or train stage (a card describes a model downcycle made)")
    steps: list[tuple[Path, dict]] = [(model_dir, man)]
    while steps[-1][1]["stage"] in ("train", "heal"):  # walk back to the cut (or the first model) this one came from
        parent = Path(steps[-1][1]["inputs"].get("model", {}).get("path", ""))
        pm = read_manifest(parent) if parent.is_dir() else None
        if pm is None or pm.get("stage") not in _MODEL_STAGES or len(steps) > 8:
            break
        steps.append((parent, pm))
    root = steps[-1][1]
    if root["stage"] in ("cut", "prune"):
        source, source_path = root["config"]["source"], Path(root["inputs"].get("source_path", ""))
    elif root["stage"] == "heal":  # healed while cutting (`cut --heal`): no cut directory before it
        source, source_path = root["inputs"]["reference"]["source"], Path(root["inputs"]["reference"].get("source_path", ""))
    else:
        source, source_path = str(root["inputs"]["model"].get("source")), Path(root["inputs"]["model"].get("path", ""))
    # the source's own card first; else the card of a model in between (a cut's card carries the source's licence on)
    lic = next((x for x in (front_matter_license(p / CARD_NAME) for p in [source_path, *(d for d, _ in steps[1:])]) if x), None)
    methods = [m["config"].get("method") for _, m in steps if m["stage"] == "train"]
    ids, sources = ([], [])
    for _, m in steps:
        if m["stage"] == "train":
            i, s = _datasets(m)
            ids, sources = ids + [x for x in i if x not in ids], sources + [x for x in s if x not in sources]
    meta: dict[str, Any] = {"base_model": _model_name(source)}
    if ids:
        meta["datasets"] = ids
    meta["library_name"] = "transformers"
    if lic:
        meta["license"] = lic
    layer_pruned = any(m["stage"] in ("cut", "heal") or (m["stage"] == "prune" and m.get("outputs", {}).get("dropped_layers")) for _, m in steps)
    meta["tags"] = ["downcycle"] + (["layer-pruning"] if layer_pruned else []) + \
        (["width-pruning"] if any(m["stage"] == "prune" for _, m in steps) else []) + \
        [t for t in dict.fromkeys(_TAGS.get(x, x) for x in methods if x)]
    title = Path(man["config"].get("out") or model_dir).name  # not the name of the temporary directory being filled
    body = [_yaml(meta), f"# {title}", "",
            (f"Made with downcycle from `{source}`. The steps below are read from the `downcycle.json` manifests, "
             "which also hold the exact configs, input hashes and library versions."), "", "## How it was made", ""]
    for d, m in reversed(steps):
        body += _cut_lines(d, m) if m["stage"] == "cut" else _prune_lines(m) if m["stage"] == "prune" else \
            _heal_lines(m) if m["stage"] == "heal" else _train_lines(m)
    if sources:
        body += ["", "Training corpus sources: " + ", ".join(f"`{s}`" for s in sources) + "."]
    if evaluation:
        body += ["", "## Evaluation", "", *evaluation]
    return "\n".join(body) + "\n"


def write_card(model_dir: Path, evaluation: Sequence[str] = ()) -> Path:
    """Write ``model_dir/README.md`` (temporary file, then rename).

    Args:
        model_dir: a ``cut`` or ``train`` output (or the temporary directory one is being written to).
        evaluation: the lines of its ``## Evaluation`` section, if any (see :func:`card_text`).

    Returns:
        The card's path.
    """
    path = Path(model_dir) / CARD_NAME
    write_atomic(path, card_text(Path(model_dir), evaluation))
    return path
