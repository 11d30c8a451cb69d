"""Reading a recipe YAML into typed, validated sections, before any work starts.

A recipe names the reference model and one section per stage; each section's keys are the options
of that stage's command (``downcycle data``, ``analyze``, ``train``, ``eval``...), in snake_case or
kebab-case, minus the ones the pipeline sets itself (input and output directories, ``force``).
Every mistake is reported with its place in the recipe, e.g. ``recipe.yaml: heal[1].lr: expected a
number, got 'fast'``. Relative paths are relative to the recipe file.

Beyond one section per stage: ``corpora`` names extra training corpora (``data`` options; what is not
given is taken from ``data``, the source excepted), which a healing run picks with ``corpus: NAME``;
a healing run whose ``cuts`` list ``reference`` also trains the uncut reference on the same tokens,
the *control* that tells healing apart from continued training on the corpus.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from ..commands import COMMANDS
from ..recipe import HEAL_METHODS, AnalyzeConfig, DataConfig, EvalConfig, HealConfig, ReportConfig, TrainConfig
from ..recipe.fields import pipeline_fields, recipe_paths
from .recipe_values import Where, check_name, coerce, kind, local_path, opt_str, scalar, unknown, unknown_key

__all__ = ["Recipe", "CutSpec", "HealSpec", "load_recipe", "parse_recipe"]

TOP_KEYS = ("name", "description", "reference", "out", "data", "corpora", "analyze", "cuts", "heal", "eval", "report")
CONTROL = "reference"  # the pseudo-cut of `heal[].cuts`: train the uncut reference (the control)
# What a section may not set (the pipeline sets it) and which of its values are paths is said by the
# fields of its command's config (``arg(pipeline=..., role=INPUT, hub=...)``), not kept here.


@dataclass
class CutSpec:
    """One cut variant: explicit ``layers``, or ``keep`` layers chosen by ``strategy`` from the analysis.
    ``evaluate: false`` leaves the plain cut out of the evaluation (a cut made only to be healed, e.g. the
    (K-1)-layer cut that layer replacement turns into K layers)."""

    name: str
    keep: str | None = None
    strategy: str = "block"
    metric: str | None = None
    layers: str | None = None
    evaluate: bool = True


@dataclass
class HealSpec:
    """One healing run applied to each of ``cuts`` (``reference`` among them: the control run on the
    uncut model); ``options`` are ``downcycle train`` options, or ``downcycle heal`` options when the
    method is ``linear`` or ``layer`` (:data:`~downcycle.recipe.HEAL_METHODS`); ``corpus`` names one of
    the recipe's ``corpora`` (None: the ``data`` corpus), which a ``heal`` method calibrates on unless
    its options name ``data``; ``start`` names an earlier heal entry whose output this one starts from
    (e.g. LoRA on top of linear replacement). (Not ``on``: YAML 1.1 reads that key as ``true``.)"""

    name: str
    cuts: list[str]
    options: dict[str, Any]
    corpus: str | None = None
    start: str | None = None

    @property
    def activation_level(self) -> bool:
        """Whether this entry runs ``downcycle heal`` (linear or layer replacement) rather than ``train``."""
        return self.options.get("method") in HEAL_METHODS


@dataclass
class Recipe:
    path: Path
    reference: str
    data: dict[str, Any]
    cuts: list[CutSpec]
    heal: list[HealSpec] = field(default_factory=list)
    analyze: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = field(default_factory=dict)
    out: Path | None = None
    name: str | None = None
    description: str | None = None
    corpora: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra corpora by name (``data`` options)


def load_recipe(path: Path) -> Recipe:
    """Read and validate ``path``; every problem is a one-line :class:`DowncycleError` naming its place."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DowncycleError(f"{path}: no such recipe file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise DowncycleError(f"{path}: not valid YAML: {at}{getattr(e, 'problem', None) or e}") from None
    except UnicodeDecodeError:
        raise DowncycleError(f"{path}: not UTF-8 text") from None
    return parse_recipe(doc, path)


def parse_recipe(doc: Any, path: Path) -> Recipe:
    """Validate an already-parsed recipe document; ``path`` is where it came from (for messages and paths)."""
    w = Where(path)
    base = path.resolve().parent
    if not isinstance(doc, dict):
        raise w.error("", "a recipe must be a mapping of sections (reference, data, cuts, heal, eval, ...)")
    unknown(w, "", doc, TOP_KEYS)
    for required in ("reference", "data", "cuts"):
        if doc.get(required) is None:
            raise w.error(required, "missing (every recipe needs reference, data and cuts)")
    reference = local_path(w, "reference", scalar(w, "reference", doc["reference"]), base, hub=True)
    data = _section(w, "data", doc["data"], DataConfig, base)
    data.setdefault("tokenizer", reference)
    analyze = _section(w, "analyze", doc.get("analyze") or {}, AnalyzeConfig, base)
    analyze.setdefault("data", (data.get("source") or [None])[0])
    corpora = _corpora(w, doc.get("corpora") or {}, data, base)
    cuts = _cuts(w, doc["cuts"])
    heal = _heal(w, doc.get("heal") or [], [c.name for c in cuts], list(corpora), base)
    evaluation = _section(w, "eval", doc.get("eval") or {}, EvalConfig, base)
    report = doc.get("report", {})
    if report is not None:  # null: no report
        report = _section(w, "report", report, ReportConfig, base)
    out = doc.get("out")
    return Recipe(path, reference, data, cuts, heal, analyze, evaluation, report,
                  Path(os.path.normpath(base / scalar(w, "out", out))) if out is not None else None,
                  opt_str(w, "name", doc.get("name")), opt_str(w, "description", doc.get("description")), corpora)


def _corpora(w: Where, doc: Any, data: dict[str, Any], base: Path) -> dict[str, dict[str, Any]]:
    """Extra corpora: each a mapping of ``data`` options, the ones it leaves out taken from ``data``
    (its ``source`` and ``weights`` excepted: each corpus names its own)."""
    if not isinstance(doc, dict):
        raise w.error("corpora", f"expected a mapping of corpus names to `downcycle data` options, got {kind(doc)}")
    inherited = {k: v for k, v in data.items() if k not in ("source", "weights")}
    corpora: dict[str, dict[str, Any]] = {}
    for name, item in doc.items():
        where = f"corpora.{name}"
        check_name(w, where, str(name), list(corpora))
        options = _section(w, where, item if item is not None else {}, DataConfig, base)
        if not options.get("source"):
            raise w.error(f"{where}.source", "missing (each corpus names its own source)")
        corpora[str(name)] = {**inherited, **options}
    return corpora


def _cuts(w: Where, items: Any) -> list[CutSpec]:
    from ..analysis.strategies import STRATEGIES

    if not isinstance(items, list) or not items:
        raise w.error("cuts", "expected a non-empty list of cuts, e.g. [{strategy: first, keep: 0.75}]")
    specs = []
    allowed = tuple(f.name for f in dataclasses.fields(CutSpec))
    for i, item in enumerate(items):
        where = f"cuts[{i}]"
        if not isinstance(item, dict):
            raise w.error(where, f"expected a mapping (strategy, keep, layers, name), got {kind(item)}")
        unknown(w, where, item, allowed)
        evaluate = item.get("evaluate", True)
        values = {k.replace("-", "_"): (None if v is None else scalar(w, f"{where}.{k}", v)) for k, v in item.items() if k != "evaluate"}
        if not isinstance(evaluate, bool):
            raise w.error(f"{where}.evaluate", f"expected true or false, got {evaluate!r}")
        if (values.get("layers") is None) == (values.get("keep") is None):
            raise w.error(where, "give exactly one of `layers` (e.g. 0-8) or `keep` (a count or a fraction, with a strategy)")
        strategy = values.get("strategy") or "block"
        if strategy not in STRATEGIES:
            raise w.error(f"{where}.strategy", f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
        name = values.get("name") or (strategy if values.get("keep") is not None else f"layers{i}")
        check_name(w, f"{where}.name", name, [s.name for s in specs])
        if name == CONTROL:
            raise w.error(f"{where}.name", f"{CONTROL!r} is reserved (heal[].cuts: [{CONTROL}] trains the uncut reference)")
        specs.append(CutSpec(name, values.get("keep"), strategy, values.get("metric"), values.get("layers"), evaluate))
    return specs


def _heal(w: Where, items: Any, cut_names: list[str], corpora: list[str], base: Path) -> list[HealSpec]:
    if not isinstance(items, list):
        raise w.error("heal", f"expected a list of healing runs, got {kind(items)}")
    specs: list[HealSpec] = []
    for i, item in enumerate(items):
        where = f"heal[{i}]"
        if not isinstance(item, dict):
            raise w.error(where, f"expected a mapping of `downcycle train` options, got {kind(item)}")
        item = dict(item)
        name, cuts, corpus, start = item.pop("name", None), item.pop("cuts", None), item.pop("corpus", None), item.pop("start", None)
        states = item.get("method") in HEAL_METHODS
        options = _section(w, where, item, HealConfig if states else TrainConfig, base)
        name = scalar(w, f"{where}.name", name) if name is not None else options.get("method", "full")
        check_name(w, f"{where}.name", name, [s.name for s in specs])
        if cuts is None:
            cuts = list(cut_names)
        cuts = [cuts] if isinstance(cuts, str) else cuts
        if not isinstance(cuts, list) or not cuts:
            raise w.error(f"{where}.cuts", "expected a list of cut names")
        for c in cuts:
            if c not in cut_names and c != CONTROL:
                raise w.error(f"{where}.cuts", f"no cut named {c!r} (the recipe's cuts: {', '.join(cut_names)}; "
                                               f"or {CONTROL!r}: the uncut reference, as a control)")
        if corpus is not None:
            corpus = scalar(w, f"{where}.corpus", corpus)
            if corpus not in corpora:
                raise w.error(f"{where}.corpus", f"no corpus named {corpus!r} in `corpora`"
                                                 + (f" (the recipe's: {', '.join(corpora)})" if corpora else ""))
        if states and CONTROL in cuts:
            raise w.error(f"{where}.cuts", f"method {options['method']!r} heals the gaps of a cut; the uncut {CONTROL!r} has none")
        if start is not None:
            start = scalar(w, f"{where}.start", start)
            first = next((s for s in specs if s.name == start), None)
            if first is None:
                raise w.error(f"{where}.start", f"no earlier heal entry named {start!r} (the ones before: "
                                                f"{', '.join(s.name for s in specs) or 'none'})")
            missing = [c for c in cuts if c not in first.cuts or c == CONTROL]
            if missing:
                raise w.error(f"{where}.start", f"heal entry {start!r} does not heal {', '.join(map(str, missing))}")
        specs.append(HealSpec(name, [str(c) for c in cuts], options, corpus, start))
    return specs


def _section(w: Where, where: str, doc: Any, cls: type, base: Path) -> dict[str, Any]:
    """A section's options checked against ``cls``'s fields and types; paths resolved."""
    command = next(name for name, c in COMMANDS.items() if c.config is cls)
    if not isinstance(doc, dict):
        raise w.error(where, f"expected a mapping of `downcycle {command}` options, got {kind(doc)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    owned, paths = pipeline_fields(cls), recipe_paths(cls)
    values: dict[str, Any] = {}
    for raw, value in doc.items():
        name = str(raw).replace("-", "_")
        if name in owned:
            raise w.error(f"{where}.{raw}", "set by the pipeline itself; remove it from the recipe")
        if name not in names:
            raise unknown_key(w, where, str(raw), [n for n in names if n not in owned])
        values[name] = coerce(w, f"{where}.{raw}", value, hints[name])
        if name in paths and values[name] is not None:
            v, hub = values[name], paths[name]
            values[name] = [local_path(w, f"{where}.{raw}", s, base, hub=False) for s in v] if isinstance(v, list) \
                else local_path(w, f"{where}.{raw}", str(v), base, hub=hub)
    return values
