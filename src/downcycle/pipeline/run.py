"""``downcycle run`` and ``downcycle sweep``: a recipe's stages chained through their directories.

A stage is skipped when its directory holds a manifest and ``pipeline.json`` (in the experiment
directory) records that it was written by this same stage config from these same inputs: the
stage's key hashes its output-affecting config, the manifests of the stages it reads (so a re-run
upstream re-runs everything downstream) and a fingerprint of the reference checkpoint. A healing
run that was interrupted resumes from its last checkpoint. ``--from`` forces a stage, and every
stage after it, to run again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts.atomic import write_atomic
from ..artifacts.hashes import config_hash, file_sha256
from ..artifacts.manifest import MANIFEST_NAME
from ..errors import DowncycleError
from ..recipe import RunConfig, SweepConfig, output_dict
from ..recipe.run import STAGE_KINDS
from .recipe_file import Recipe, load_recipe
from .stages import Stage, build_stages

STATE_NAME = "pipeline.json"

__all__ = ["PipelineResult", "run_recipe", "run_sweep", "run_stages", "plan_stages", "stage_key"]


@dataclass
class PipelineResult:
    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    seconds: float = 0.0


def run_recipe(config: RunConfig) -> PipelineResult:
    recipe = load_recipe(config.recipe)
    out = _out(config.out, recipe, "")
    return run_stages(recipe, out, build_stages(recipe, out), config.from_stage, config.dry_run, config.progress)


def run_sweep(config: SweepConfig) -> PipelineResult:
    recipe = load_recipe(config.recipe)
    if not any(c.keep is not None for c in recipe.cuts):
        raise DowncycleError(f"{config.recipe}: cuts: a sweep needs at least one cut chosen by `keep` (a depth), not only `layers`")
    out = _out(config.out, recipe, "-sweep")
    stages = build_stages(recipe, out, config.depth_list)
    from .sweep import sweep_stage

    at = next((i for i, s in enumerate(stages) if s.kind == "report"), len(stages))
    stages.insert(at, sweep_stage(out, stages, recipe))
    return run_stages(recipe, out, stages, config.from_stage, config.dry_run, config.progress)


def _out(out: Path | None, recipe: Recipe, suffix: str) -> Path:
    if out is not None:
        return Path(out)
    if recipe.out is None:
        raise DowncycleError(f"{recipe.path}: no `out` in the recipe; pass --out DIR")
    return recipe.out.with_name(recipe.out.name + suffix)


def plan_stages(stages: list[Stage], out: Path, from_stage: str | None) -> tuple[dict[str, bool], dict[str, Any]]:
    """Which stages must run (name -> bool) as things stand on disk, and the recorded state."""
    state = _read_state(out)
    first_forced = _from_index(stages, from_stage)
    must: dict[str, bool] = {}
    for i, stage in enumerate(stages):
        if first_forced is not None and i >= first_forced:
            must[stage.name] = True
            continue
        if any(must.get(a) for a in stage.after):
            must[stage.name] = True
            continue
        record = state["stages"].get(stage.name)
        manifest = marker(stage, out)
        must[stage.name] = not (record and manifest.is_file() and record.get("key") == stage_key(stage, out)
                                and record.get("manifest") == _sha(manifest))
    return must, state


def run_stages(recipe: Recipe, out: Path, stages: list[Stage], from_stage: str | None = None, dry_run: bool = False,
               progress: bool = True) -> PipelineResult:
    """Run (or, with ``dry_run``, list) ``stages`` into ``out``, skipping those already done."""
    must, state = plan_stages(stages, out, from_stage)
    first_forced = _from_index(stages, from_stage)
    result = PipelineResult(out, stages=stages)
    width = max(len(s.name) for s in stages)
    if dry_run:
        for i, stage in enumerate(stages, 1):
            print(f"[{i}/{len(stages)}] {stage.name:<{width}}  {stage.kind:<8} {'run' if must[stage.name] else 'done: skip'}")
        return result
    out.mkdir(parents=True, exist_ok=True)
    state["recipe"] = str(recipe.path.resolve())
    start = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        if not must[stage.name]:
            print(f"[{i}/{len(stages)}] {stage.name}: done, skipped", flush=True)
            result.skipped.append(stage.name)
            continue
        print(f"\n== [{i}/{len(stages)}] {stage.name} ({stage.kind})", flush=True)
        t0 = time.perf_counter()
        forced = first_forced is not None and i - 1 >= first_forced
        _execute(stage, out, progress, resume=not forced)
        manifest = marker(stage, out)
        state["stages"][stage.name] = {"kind": stage.kind, "key": stage_key(stage, out), "manifest": _sha(manifest),
                                       "seconds": round(time.perf_counter() - t0, 1)}
        _write_state(out, state)
        result.ran.append(stage.name)
    result.seconds = time.perf_counter() - start
    return result


def marker(stage: Stage, out: Path) -> Path:
    """The file whose presence and content say a stage finished: its manifest (the report: report.html)."""
    return out / "report.html" if stage.kind == "report" else out / stage.name / MANIFEST_NAME


def stage_key(stage: Stage, out: Path) -> str:
    """What decides a stage's output: its config, its strategy choice, and the manifests it reads."""
    config = output_dict(stage.config) if dataclasses.is_dataclass(stage.config) else stage.config
    upstream = {a: _sha(out / a / MANIFEST_NAME) for a in stage.after}
    doc = {"kind": stage.kind, "config": config, "choice": stage.choice, "upstream": upstream, "reference": stage.reference}
    return config_hash(doc)


def _execute(stage: Stage, out: Path, progress: bool, resume: bool) -> None:
    cfg = stage.config
    if stage.kind == "data":
        from ..data.corpus import build_corpus

        build_corpus(dataclasses.replace(cfg, force=True, progress=progress))
    elif stage.kind == "analyze":
        from ..analysis.run import run_analyze

        result = run_analyze(dataclasses.replace(cfg, force=True, progress=progress))
        print(f"analysis: {cfg.strategy} would keep {result.plan.kept_layers}")
    elif stage.kind == "cut":
        from ..surgery.cut import cut

        if stage.choice is not None:
            from .plans import write_plan

            kept = write_plan(out / "analysis", cfg.plan, **stage.choice)
            print(f"{stage.choice['strategy']}: keep {kept}")
        result = cut(dataclasses.replace(cfg, force=True, progress=progress))
        print(f"wrote {result.out}: {len(result.kept_layers)} of {result.source_layers} layers")
    elif stage.kind == "train":
        from ..training import run_train
        from ..training.checkpointing import latest_checkpoint

        # resume an interrupted run where it left a checkpoint (`--resume` with none is an error)
        resume = resume and latest_checkpoint(out / f"{stage.name}.run" / "checkpoints") is not None
        result = run_train(dataclasses.replace(cfg, force=True, resume=resume, progress=progress))
        for note in result.notes:
            print(f"  note: {note}")
        start = f"{result.val_loss_start:.4f} -> " if result.val_loss_start is not None else ""
        print(f"{stage.name}: {result.steps} steps, val loss {start}{result.val_loss:.4f}")
    elif stage.kind == "eval":
        from ..evaluation.run import run_eval

        run_eval(dataclasses.replace(cfg, force=True, progress=progress))
    elif stage.kind == "compare":
        from ..report.compare import run_compare

        print(run_compare(dataclasses.replace(cfg, force=True)).markdown)
    elif stage.kind == "report":
        from ..report.build import run_report

        result = run_report(cfg)
        print(f"report: {result.html}")
    elif stage.kind == "sweep":
        from .sweep import run_sweep_stage

        run_sweep_stage(stage, out)
    else:  # pragma: no cover - build_stages makes only the kinds above
        raise AssertionError(stage.kind)


def _from_index(stages: list[Stage], from_stage: str | None) -> int | None:
    if from_stage is None:
        return None
    for i, stage in enumerate(stages):
        if from_stage in (stage.name, stage.kind) or (from_stage == "heal" and stage.kind == "train"):
            return i
    names = ", ".join(dict.fromkeys([s.kind for s in stages] + [s.name for s in stages]))
    raise DowncycleError(f"--from {from_stage!r}: no such stage (kinds: {', '.join(STAGE_KINDS)}; this recipe's stages: {names})")


def _sha(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def _read_state(out: Path) -> dict[str, Any]:
    path = out / STATE_NAME
    try:
        state = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        state = {}  # unreadable: every stage is re-checked and re-run
    state.setdefault("stages", {})
    return state


def _write_state(out: Path, state: dict[str, Any]) -> None:
    write_atomic(out / STATE_NAME, json.dumps(state, indent=2) + "\n")
