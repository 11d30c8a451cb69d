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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts.atomic import check_output_apart, write_atomic
from ..artifacts.hashes import config_hash, file_sha256
from ..artifacts.manifest import MANIFEST_NAME
from ..errors import DowncycleError
from ..recipe import RunConfig, SweepConfig, inputs_of, output_dict, outputs_of
from ..recipe.run import STAGE_KINDS
from ..commands import get_command
from .recipe_file import Recipe, load_recipe
from .recipe_stages import Stage, build_stages

STATE_NAME = "pipeline.json"

__all__ = ["PipelineResult", "plan_stages", "run_recipe", "run_stages", "run_sweep", "stage_key", "summary"]


@dataclass
class PipelineResult:
    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False


Echo = Callable[[str], None]


def _silent(line: str) -> None:
    pass


def run_recipe(config: RunConfig, echo: Echo | None = None) -> PipelineResult:
    """``downcycle run``; ``echo`` is given a line as each stage starts, is skipped or finishes."""
    recipe = load_recipe(config.recipe)
    out = _out(config.out, recipe, "")
    return run_stages(recipe, out, build_stages(recipe, out), config.from_stage, config.dry_run, config.progress, echo)


def run_sweep(config: SweepConfig, echo: Echo | None = None) -> PipelineResult:
    """``downcycle sweep``: each cut chosen by ``keep`` made at every depth; ``echo`` as :func:`run_recipe`."""
    recipe = load_recipe(config.recipe)
    if not any(c.keep is not None for c in recipe.cuts):
        raise DowncycleError(f"{config.recipe}: cuts: a sweep needs at least one cut chosen by `keep` (a depth), not only `layers`")
    out = _out(config.out, recipe, "-sweep")
    stages = build_stages(recipe, out, config.depth_list)
    from .sweep import sweep_stage

    at = next((i for i, s in enumerate(stages) if s.kind == "report"), len(stages))
    stages.insert(at, sweep_stage(out, stages, recipe))
    return run_stages(recipe, out, stages, config.from_stage, config.dry_run, config.progress, echo)


def summary(result: PipelineResult) -> str | None:
    """What ran and what was skipped (a dry run has listed its stages already)."""
    if result.dry_run:
        return None
    lines = [f"\n{result.out}: ran {len(result.ran)} stage(s), skipped {len(result.skipped)} already done ({result.seconds:.0f} s)"]
    report = result.out / "report.html"
    if report.is_file():
        lines.append(f"report: {report}")
    return "\n".join(lines)


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
               progress: bool = True, echo: Echo | None = None) -> PipelineResult:
    """Run (or, with ``dry_run``, list) ``stages`` into ``out``, skipping those already done;
    ``echo`` (default: nothing) is given the progress lines, each stage's summary among them."""
    echo = echo or _silent
    for stage in stages:  # an output that is, holds or lies in an input already there: refused before any stage runs
        if dataclasses.is_dataclass(stage.config):
            for _, path in outputs_of(stage.config):
                check_output_apart(Path(path), inputs_of(stage.config))
    must, state = plan_stages(stages, out, from_stage)
    first_forced = _from_index(stages, from_stage)
    result = PipelineResult(out, stages=stages, dry_run=dry_run)
    width = max(len(s.name) for s in stages)
    if dry_run:
        for i, stage in enumerate(stages, 1):
            echo(f"[{i}/{len(stages)}] {stage.name:<{width}}  {stage.kind:<8} {'run' if must[stage.name] else 'done: skip'}")
        return result
    out.mkdir(parents=True, exist_ok=True)
    state["recipe"] = str(recipe.path.resolve())
    start = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        if not must[stage.name]:
            echo(f"[{i}/{len(stages)}] {stage.name}: done, skipped")
            result.skipped.append(stage.name)
            continue
        echo(f"\n== [{i}/{len(stages)}] {stage.name} ({stage.kind})")
        t0 = time.perf_counter()
        forced = first_forced is not None and i - 1 >= first_forced
        _execute(stage, out, progress, resume=not forced, echo=echo)
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


def _execute(stage: Stage, out: Path, progress: bool, resume: bool, echo: Echo) -> None:
    """Run one stage through the command table, as its command would, and echo its summary. A cut
    chosen by a strategy first writes its plan; an interrupted healing run resumes."""
    if stage.kind == "sweep":  # the pipeline's own stage (not a command)
        from .sweep import run_sweep_stage

        echo(run_sweep_stage(stage, out))
        return
    cfg = stage.config
    # every stage directory belongs to the pipeline: replaced when it must re-run
    cfg = dataclasses.replace(cfg, **{k: v for k, v in (("force", True), ("progress", progress)) if hasattr(cfg, k)})
    if stage.kind == "cut" and stage.choice is not None:
        from .plans import write_plan

        kept = write_plan(out / "analyze", cfg.plan, **stage.choice)
        echo(f"{stage.choice['strategy']}: keep {kept}")
    elif stage.command == "train":
        from ..training.run import can_resume

        # resume an interrupted run where it left a checkpoint (`--resume` with none is an error)
        resume = resume and can_resume(cfg.out)
        cfg = dataclasses.replace(cfg, resume=resume)
    spec = get_command(stage.command)
    text = spec.load_summary()(spec.load_run()(cfg))
    if text:
        echo(text)


def _from_index(stages: list[Stage], from_stage: str | None) -> int | None:
    if from_stage is None:
        return None
    for i, stage in enumerate(stages):
        if from_stage in (stage.name, stage.kind):
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
