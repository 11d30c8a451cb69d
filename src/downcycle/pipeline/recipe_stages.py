"""The stages of a recipe, in the order they run, each with the command it runs and that command's config.

One vocabulary: a stage's kind is the recipe section it comes from, the prefix of its directory and
what ``--from`` takes. Stage directories under the experiment's output directory (the layout
``downcycle report`` reads):

    directory                        kind     command   what
    data/                            data     data      the packed training corpus
    data-<name>/                     data     data      each of the recipe's extra `corpora`
    analyze/                         analyze  analyze   layer scores of the reference, heatmaps
    plans/<cut>.json                                    each strategy's choice, derived from analyze/scores.json
    cut-<name>[-<depth>]/            cut      cut       one per cut (per depth in a sweep)
    heal-<cut>-<heal>/               heal     heal      one per `heal` entry and cut it applies to: methods linear, layer
                                              train     methods full, lora, qlora, distill
    heal-reference-<heal>/           heal     train     the control: the uncut reference healed the same way (cuts: [reference])
    eval/                            eval     eval      every model's results.json
    compare/                         compare  compare   the side-by-side table and charts
    sweep/                           sweep    -         (sweeps only) size-versus-quality curves
    report.html, report.md, report/  report   report
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from ..recipe import AnalyzeConfig, CompareConfig, CutConfig, DataConfig, EvalConfig, HealConfig, ReportConfig, TrainConfig
from .names import check_names
from .recipe_file import CONTROL, CutSpec, Recipe

__all__ = ["Stage", "build_stages"]


@dataclass
class Stage:
    """One step of the pipeline.

    Attributes:
        name: its directory under the experiment directory (also how ``--from`` names it).
        kind: the recipe section it comes from (:data:`~downcycle.recipe.run.STAGE_KINDS`).
        config: the typed config of the command it runs (``force`` and ``progress`` are set when it runs).
        after: names of the stages whose outputs it reads; when one of them re-runs, so does it.
        choice: for cuts chosen by a strategy: what the plan is derived from (strategy, keep, metric).
        info: labels for reports (cut name, depth, healing method, kept layers).
    """

    name: str
    kind: str
    config: Any
    after: list[str] = field(default_factory=list)
    choice: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None

    @property
    def command(self) -> str | None:
        """The command this stage runs (:data:`downcycle.commands.COMMANDS`); None for the pipeline's own sweep stage."""
        if self.kind == "sweep":
            return None
        return ("heal" if isinstance(self.config, HealConfig) else "train") if self.kind == "heal" else self.kind


def _wrap(where: str, build: Any) -> Any:
    """Build a stage config; its own validation errors are reported at their place in the recipe."""
    try:
        return build()
    except DowncycleError as e:
        raise DowncycleError(f"{where}: {e}") from None


def build_stages(recipe: Recipe, out: Path, depths: list[str] | None = None) -> list[Stage]:
    """Every stage of ``recipe`` writing under ``out``; with ``depths`` (a sweep) each cut is made at each depth."""
    from ..analysis.strategies import get_strategy, resolve_keep
    from ..architecture import num_layers as count_layers
    from ..surgery.layerspec import parse_layers
    from ..loading import read_config, resolve_source

    where = str(recipe.path)
    check_names(recipe)  # every task, method, loss, optimizer and metric, before any stage runs
    ref_dir = _wrap(f"{where}: reference", lambda: resolve_source(recipe.reference))
    ref_config = read_config(ref_dir)
    num_layers = _wrap(f"{where}: reference: {ref_dir}", lambda: count_layers(ref_config))

    stages = [Stage("data", "data", _wrap(f"{where}: data", lambda: DataConfig(**recipe.data, out=out / "data")))]
    corpus = out / "data"
    for cname, coptions in recipe.corpora.items():
        stages.append(Stage(f"data-{cname}", "data", _wrap(f"{where}: corpora.{cname}", lambda o=coptions, n=cname: DataConfig(
            **o, out=out / f"data-{n}"))))

    cuts: list[tuple[CutSpec, str | None, int | None]] = []  # (spec, sweep depth, layers kept when chosen by `keep`)
    for spec in recipe.cuts:
        for depth in (depths if depths and spec.keep is not None else [None]):
            keep = depth or spec.keep
            at, option = (where, "--depths") if depth else (f"{where}: cuts[{recipe.cuts.index(spec)}].keep", "--keep")
            count = None if keep is None else _wrap(at, lambda k=keep, o=option: resolve_keep(k, num_layers, o))
            cuts.append((spec, depth, count))
    keeps = [count for _, _, count in cuts if count is not None]
    need_nll = any(spec.strategy == "nll" or spec.metric == "nll" for spec, _, _ in cuts)
    analyze_keep = str(min(keeps)) if keeps else str(max(1, round(0.75 * num_layers)))
    analyze = _wrap(f"{where}: analyze", lambda: AnalyzeConfig(
        model=recipe.reference, out=out / "analyze", keep=analyze_keep, strategy="nll" if need_nll else "block",
        **recipe.analyze))
    stages.append(Stage("analyze", "analyze", analyze))

    models: list[tuple[str, str, dict[str, Any]]] = [("reference", recipe.reference, {"role": "reference", "layers": num_layers})]
    cut_stages: dict[str, list[Stage]] = {}
    for spec, depth, count in cuts:
        name = f"cut-{spec.name}" + (f"-{depth}" if depth else "")
        index = recipe.cuts.index(spec)
        info = {"role": "cut", "cut": spec.name, "strategy": spec.strategy if spec.layers is None else "layers", "depth": depth}
        if spec.layers is not None:
            kept = _wrap(f"{where}: cuts[{index}].layers", lambda s=spec: parse_layers(s.layers, num_layers))
            config = CutConfig(source=recipe.reference, out=out / name, layers=spec.layers)
            stage = Stage(name, "cut", config, info={**info, "layers": len(kept)})
        else:
            config = CutConfig(source=recipe.reference, out=out / name, plan=out / "plans" / f"{name}.json")
            choice = {"strategy": spec.strategy, "keep": count, "metric": spec.metric, "num_layers": num_layers}
            scored = spec.metric is not None or bool(get_strategy(spec.strategy).metric_kinds)  # ranks by the analysis's scores
            after = ["analyze"] if scored else []
            stage = Stage(name, "cut", config, after, choice, {**info, "layers": count})
        stages.append(stage)
        cut_stages.setdefault(spec.name, []).append(stage)
        if spec.evaluate:
            models.append((name, str(out / name), stage.info))

    reference_info = {"role": "reference", "cut": CONTROL, "strategy": None, "depth": None, "layers": num_layers}
    for h_index, heal in enumerate(recipe.heal):
        corpus_stage = "data" if heal.corpus is None else f"data-{heal.corpus}"
        for cut_name in heal.cuts:
            # (stage name, model it trains, the stage that wrote that model or None for the reference, its info)
            targets = [(f"heal-{CONTROL}-{heal.name}", recipe.reference, None, reference_info)] if cut_name == CONTROL else \
                [(f"heal-{c.name.removeprefix('cut-')}-{heal.name}", str(out / c.name), c.name, c.info) for c in cut_stages[cut_name]]
            for name, model, parent, parent_info in targets:
                start = parent  # the stage whose model this one starts from: the cut, or (`start`) an earlier heal of it
                if heal.start is not None and parent is not None:
                    start = f"heal-{parent.removeprefix('cut-')}-{heal.start}"
                    model = str(out / start)
                options = dict(heal.options)
                label = f"{where}: heal[{h_index}]"
                if heal.activation_level:
                    options.setdefault("data", str(out / corpus_stage))
                    config = _wrap(label, lambda o=options, n=name, m=model: HealConfig(model=m, out=out / n, **o))
                else:
                    if options.get("method") == "distill" and options.get("teacher") is None:
                        options["teacher"] = recipe.reference
                    options.setdefault("save_every", _save_every(options))
                    config = _wrap(label, lambda o=options, n=name, m=model, c=corpus_stage: TrainConfig(
                        model=m, data=out / c, out=out / n, **o))
                after = [corpus_stage] + ([start] if start else [])
                info = {**parent_info, "role": "control" if parent is None else "healed", "heal": heal.name, "method": config.method,
                        "from": parent or "reference", "corpus": corpus_stage, **({"start": start} if start != parent else {})}
                stages.append(Stage(name, "heal", config, after, info=info))
                models.append((name, str(out / name), info))

    eval_options = dict(recipe.eval)
    eval_options.setdefault("data", str(corpus))
    if "loss" in [t.strip() for t in str(eval_options.get("tasks", "loss")).split(",")]:
        eval_options.setdefault("reference", recipe.reference)  # the loss task's KL(reference‖model) per token
    if eval_options.get("window") is None and eval_options["data"] == str(corpus):
        eval_options["window"] = stages[0].config.seq_len
    evaluation = _wrap(f"{where}: eval", lambda: EvalConfig(models=[m for _, m, _ in models], out=out / "eval", **eval_options))
    stages.append(Stage("eval", "eval", evaluation, [s.name for s in stages if s.kind in ("data", "cut", "heal")],
                        info={"models": {n: {**i, "eval_name": Path(m).name} for n, m, i in models}}))
    results = [str(out / "eval" / Path(m).name / "results.json") for _, m, _ in models]
    ref_name = Path(recipe.reference).name
    # every model against the reference, then every healed model against the cut it was healed from
    pairs = [f"{Path(m).name}:{ref_name}" for _, m, _ in models[1:]]
    evaluated = {Path(m).name for _, m, _ in models}
    pairs += [f"{Path(m).name}:{i['from']}" for _, m, i in models if i.get("role") == "healed" and i["from"] in evaluated]
    stages.append(Stage("compare", "compare", CompareConfig(results=results, out=out / "compare", reference=ref_name,
                                                            pairs=",".join(pairs) if len(models) > 1 else None), ["eval"]))
    if recipe.report is not None:
        report = _wrap(f"{where}: report", lambda: ReportConfig(dir=out, **recipe.report))
        stages.append(Stage("report", "report", report, [s.name for s in stages if s.kind in ("analyze", "heal", "eval", "compare")]))
    fingerprint = reference_fingerprint(ref_dir)
    for stage in stages:
        stage.reference = fingerprint
    return stages


def reference_fingerprint(directory: Path) -> str:
    """A cheap identity of a checkpoint directory: its config.json bytes and its weight files' names,
    sizes and modification times (a retrained or replaced reference changes it)."""
    import hashlib

    h = hashlib.sha256((directory / "config.json").read_bytes())
    for f in sorted(directory.glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _save_every(options: dict[str, Any]) -> int:
    """A resumable checkpoint about four times per run (every 200 steps when the length is not in steps)."""
    steps = options.get("max_steps")
    return max(10, steps // 4) if isinstance(steps, int) else 200
