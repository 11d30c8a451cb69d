"""``downcycle analyze``: load a model, score its layers on calibration text, write a cut plan.

Writes one directory (atomically, with a ``downcycle.json`` manifest): ``plan.json`` (read by
``downcycle cut --plan``), ``scores.json`` (every metric) and PNG plots; with ``--width`` also
``width/scores.json`` and ``width/importance.png`` (:mod:`.width`, read by ``downcycle prune --scores``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts.atomic import atomic_output_dir, check_new_output
from ..artifacts.hashes import file_sha256
from ..artifacts.manifest import write_manifest
from ..loading import load_model, resolve_device, resolve_source
from ..recipe import AnalyzeConfig, inputs_of, output_dict, to_dict
from ..surgery.plan import PLAN_NAME, Plan
from .analyze import Analysis, analyze_model, check_metric
from .choice import make_plan
from .strategies import get_strategy, resolve_keep
from .width import WIDTH_DIR, WIDTH_SCORES, check_width_family, width_importance, write_width_files

SCORES_NAME = "scores.json"

__all__ = ["SCORES_NAME", "AnalyzeResult", "analyze_to_plan", "plan_for_cut", "run_analyze", "summary", "write_analysis", "write_files"]


@dataclass
class AnalyzeResult:
    out: Path
    plan: Plan
    files: list[str] = field(default_factory=list)
    model: str | None = None  # the analyzed model, as given


def run_analyze(config: AnalyzeConfig) -> AnalyzeResult:
    """Analyze ``config.model`` on ``config.data`` and write the plan, scores and plots to ``config.out``."""
    out = Path(config.out)
    check_new_output(out, config.force, inputs_of(config))  # fail before loading anything
    src = resolve_source(config.model)
    analysis, plan = analyze_to_plan(config, src)
    inputs = {"model": config.model, "model_path": str(src.resolve()), "data": config.data,
              "hashes": {"config.json": file_sha256(src / "config.json")}}
    result = write_analysis(out, analysis, plan, config=to_dict(config), inputs=inputs, force=config.force, plots=config.plots,
                            hashed=output_dict(config))
    result.model = config.model
    return result


def analyze_to_plan(config: AnalyzeConfig, src: Path) -> tuple[Analysis, Plan]:
    """Load the model in ``src`` and its tokenizer, read the calibration windows, score every layer
    (plus the NLL search when the strategy or metric needs it) and choose the kept layers."""
    strategy = get_strategy(config.strategy)
    metric = check_metric(strategy, config.metric)
    calib, tok_path = _calibration(config, src)  # every input checked before the model loads
    device = resolve_device(config.device)
    from .hidden_stats import as_batches

    batches = as_batches(calib.input_ids, config.batch_size)
    needs_nll = "nll" in (metric, strategy.name)
    layerwise = _layerwise(config, src, device)
    if layerwise:
        from ..layerwise import open_layerwise
        from .analyze import analysis_of
        from .hidden_stats import collect_hidden_stats_layerwise

        lw = open_layerwise(src, dtype=config.dtype, device=device, trust_remote_code=config.trust_remote_code)
        num, dtype = lw.num_layers, lw.dtype
        keep = resolve_keep(config.keep, num)
        nll_k = num - keep if needs_nll else None
        greedy = None
        if nll_k is not None:
            from .nll_layerwise import greedy_removal_layerwise

            greedy = greedy_removal_layerwise(lw, as_batches(calib.input_ids[: config.nll_samples], config.batch_size), nll_k,
                                              progress=config.progress)
        analysis = analysis_of(collect_hidden_stats_layerwise(lw, batches, progress=config.progress), greedy)
        if config.width:
            analysis.width = width_importance(lw, batches, progress=config.progress)
    else:
        model = load_model(src, dtype=config.dtype, device=device, trust_remote_code=config.trust_remote_code)
        from ..decoder import num_decoder_layers

        num, dtype = num_decoder_layers(model), next(model.parameters()).dtype
        keep = resolve_keep(config.keep, num)
        nll_k = num - keep if needs_nll else None
        nll_batches = as_batches(calib.input_ids[: config.nll_samples], config.batch_size)
        analysis = analyze_model(model, batches, nll_removals=nll_k, nll_batches=nll_batches, progress=config.progress)
        if config.width:
            analysis.width = width_importance(model, batches, progress=config.progress)
    details = {
        "calibration": {**calib.provenance(), "text_field": config.text_field, "tokenizer": tok_path,
                        "nll_samples": min(config.nll_samples, calib.input_ids.shape[0]) if nll_k is not None else 0},
        "model": {"source": config.model, "dtype": str(dtype).removeprefix("torch."), "device": device,
                  "layerwise": layerwise},
        "scores": SCORES_NAME,
    }
    if analysis.width is not None:
        details["width_scores"] = f"{WIDTH_DIR}/{WIDTH_SCORES}"
    return analysis, make_plan(num, strategy.name, keep, metric, analysis.metric_values, **details)


def _layerwise(config: AnalyzeConfig, src: Path, device: str) -> bool:
    """Whether the model runs one decoder layer at a time: ``--layerwise``/``--no-layerwise``, else
    when its weights do not fit the device's free memory."""
    from ..layerwise import fits_in_memory

    return config.layerwise if config.layerwise is not None else not fits_in_memory(src, config.dtype, device)


def _calibration(config: AnalyzeConfig, src: Path) -> tuple[Any, str]:
    """The calibration windows, read with the tokenizer before the model loads, and checked against
    what its config.json says: the layer count ``--keep`` needs, the embedding rows the ids need."""
    from ..architecture import num_layers
    from ..loading import read_config
    from ..corpus.calibration import model_calibration

    model_config = read_config(src)
    resolve_keep(config.keep, num_layers(model_config))
    if config.width:
        check_width_family(model_config)
    return model_calibration(src, config.data, samples=config.samples, seq_len=config.seq_len, text_field=config.text_field,
                             tokenizer=config.tokenizer, trust_remote_code=config.trust_remote_code)


def plan_for_cut(cut_config: Any, src: Path) -> tuple[Analysis, Plan]:
    """``downcycle cut SRC OUT --keep K --strategy S --data D``: the analysis ``downcycle analyze``
    would run with those options (and its defaults for the rest), for the cut to follow."""
    config = AnalyzeConfig(model=cut_config.source, data=cut_config.data, out=cut_config.out, keep=cut_config.keep,
                           strategy=cut_config.strategy, progress=cut_config.progress)
    return analyze_to_plan(config, src)


def write_analysis(out: Path, analysis: Analysis, plan: Plan, *, config: dict[str, Any], inputs: dict[str, Any],
                   force: bool = False, plots: bool = True, hashed: dict[str, Any] | None = None) -> AnalyzeResult:
    """Write ``plan.json``, ``scores.json``, the plots and the manifest into ``out``, atomically.
    ``hashed``: the config fields that affect the output (:func:`downcycle.recipe.output_dict`)."""
    with atomic_output_dir(out, force=force) as tmp:
        files = write_files(tmp, analysis, plan, plots)
        write_manifest(tmp, "analyze", config, inputs, {"kept_layers": plan.kept_layers, "source_layers": plan.source_layers,
                                                       "strategy": plan.strategy, "files": files}, hashed=hashed)
    return AnalyzeResult(Path(out), plan, files)


def write_files(directory: Path, analysis: Analysis, plan: Plan, plots: bool = True) -> list[str]:
    """``plan.json``, ``scores.json``, (with ``plots``) the PNGs and, when the width importance ran,
    ``width/`` (its ``scores.json`` and plot) into an existing ``directory``."""
    import json

    plan.save(directory / PLAN_NAME)
    (directory / SCORES_NAME).write_text(json.dumps(analysis.to_json(), indent=1) + "\n")
    files = [PLAN_NAME, SCORES_NAME] + (_plots(directory, analysis, plan) if plots else [])
    if analysis.width is not None:
        (directory / WIDTH_DIR).mkdir()
        files += [f"{WIDTH_DIR}/{f}" for f in write_width_files(directory / WIDTH_DIR, analysis.width, plots=plots)]
    return files


def _plots(tmp: Path, analysis: Analysis, plan: Plan) -> list[str]:
    from .plots import plot_angular, plot_per_layer

    dropped = plan.details.get("dropped_layers", [])
    tokens = f"{analysis.stats.sequences} sequences, {analysis.stats.tokens} tokens"
    plot_angular(analysis.scores["angular-last"], tmp / "angular_distance.png",
                 f"d(x_l, x_(l+n)), last token ({tokens})", dropped)
    plot_angular(analysis.scores["angular-mean"], tmp / "angular_distance_mean.png",
                 f"d(x_l, x_(l+n)), mean over tokens ({tokens})", dropped)
    plot_per_layer(analysis.scores["bi"], tmp / "block_influence.png", f"Block Influence ({tokens})", "BI = 1 - E[cos]", dropped)
    files = ["angular_distance.png", "angular_distance_mean.png", "block_influence.png"]
    if analysis.greedy is not None and analysis.greedy.steps:
        first, base = analysis.greedy.steps[0], analysis.greedy.base_nll
        plot_per_layer([first.get(i, float("nan")) - base for i in range(analysis.num_layers)], tmp / "nll.png",
                       f"calibration NLL increase with one layer removed (full model: {base:.3f} nats/token)",
                       "NLL - NLL(full model)", dropped)
        files.append("nll.png")
    return files


def summary(result: AnalyzeResult) -> str:
    """The choice, and the command that cuts by it."""
    plan = result.plan
    text = (f"wrote {result.out}: strategy {plan.strategy} keeps {len(plan.kept_layers)} of {plan.source_layers} layers, "
            f"drops {plan.details['dropped_layers']} ({', '.join(result.files)})\n"
            f"  next: downcycle cut {result.model} OUT --plan {result.out / PLAN_NAME}")
    if "width_scores" in plan.details:
        text += f"\n    or: downcycle prune {result.model} OUT --scores {result.out / plan.details['width_scores']} --ffn N ..."
    return text
