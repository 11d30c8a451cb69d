"""Evaluating one multiple-choice task (or a group of them) on one model."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from .distributed import ONE_PROCESS, Processes
from .encoding import Encoder
from .metrics import Stat, doc_metrics, item_metrics, mean_stat, pool_stats
from .results import MetricValue, TaskResult
from .scoring import score_groups
from .task_data import docs_and_fewshot_pool, find_local, load_docs, pooled_sample
from .tasks import TASKS, GroupSpec, MultipleChoiceSpec

__all__ = ["McOptions", "evaluate_group", "evaluate_mc", "fewshot_docs"]


@dataclass
class McOptions:
    """How to run multiple-choice tasks (from :class:`downcycle.recipe.EvalConfig`)."""

    task_data: Path | None = None
    limit: int | None = None
    shots: int | None = None
    batch_size: int = 32
    shared_context: bool = True
    progress: bool = True
    seed: int = 1234
    sample: int | None = None
    processes: Processes = ONE_PROCESS  # several: each scores its share of the batches (:mod:`.distributed`)


def fewshot_docs(spec: MultipleChoiceSpec, k: int, pool: list[dict], doc_index: int, same_split: bool, seed: int) -> list[dict]:
    """The ``k`` few-shot examples for document ``doc_index``.

    ``first_n`` takes the first k of the few-shot split (the harness's MMLU); ``random`` draws k with
    a generator seeded by ``seed`` and the document index, never the document itself.
    """
    if k == 0:
        return []
    if spec.fewshot_sampler == "first_n":
        return pool[:k]
    candidates = [d for i, d in enumerate(pool) if not (same_split and i == doc_index)]
    return random.Random(seed * 1_000_003 + doc_index).sample(candidates, min(k, len(candidates)))


def evaluate_mc(model: Any, encoder: Encoder, spec: MultipleChoiceSpec, opts: McOptions,
                indices: list[int] | None = None) -> tuple[TaskResult, list[dict], dict[str, list[float]]]:
    """Score every document of ``spec`` (or those at ``indices``: a group's pooled sample).

    Returns:
        The task result, per-document samples (log-likelihoods, gold, metrics; for single-answer
        tasks also ``choice_chars``, ``gold_ll``, ``gold_ll_char`` and ``brier``:
        :func:`~downcycle.evaluation.metrics.item_metrics`) and the per-document
        metric values (for pooling into a group).
    """
    sel = docs_and_fewshot_pool(spec, opts.task_data, opts.limit, opts.shots, opts.sample, opts.seed, indices)
    docs, k, pool = sel.docs, sel.shots, sel.pool
    same = spec.fewshot_split == spec.split
    requests = [spec.request(d, fewshot_docs(spec, k, pool, i, same, opts.seed)) for i, d in zip(sel.indices, docs)]
    groups = encoder.groups(requests, shared=opts.shared_context)
    scores = score_groups(model, groups, opts.batch_size, opts.progress, desc=spec.name, shared=opts.shared_context,
                          processes=opts.processes)
    per_doc: dict[str, list[float]] = {m: [] for m in spec.metrics}
    samples = []
    for d, req in enumerate(requests):
        lls = [scores[(d, c)][0] for c in range(len(req.choices))]
        values = spec.score(docs[d], lls) if spec.score else doc_metrics(lls, req.choices, req.gold)
        for m in spec.metrics:
            per_doc[m].append(values[m])
        sample = {"doc": sel.indices[d], "gold": req.gold, "loglikelihoods": lls,
                  "is_greedy": [scores[(d, c)][1] for c in range(len(req.choices))], **{m: values[m] for m in spec.metrics}}
        if spec.score is None:  # one gold answer: the continuous per-item metrics (a custom score has several true answers)
            chars = [len(c) for c in req.choices]  # the lengths acc_norm divides by (doc_metrics)
            sample.update(choice_chars=chars, **item_metrics(lls, req.gold, chars))
        samples.append(sample)
    metrics = {m: _metric(mean_stat(v)) for m, v in per_doc.items()}
    return (TaskResult(spec.version, spec.kind, k, opts.limit, len(docs), metrics, sample=opts.sample,
                       indices=sel.indices if sel.sampled else None), samples, per_doc)


def evaluate_group(model: Any, encoder: Encoder, group: GroupSpec, opts: McOptions) -> tuple[TaskResult, dict[str, TaskResult], dict[str, list[dict]]]:
    """Evaluate a group's subtasks and pool them by size. With ``--task-data``, subtasks without a
    local file are skipped (the result lists the subtasks used). ``--sample N`` draws N items of the
    group as a whole (:func:`pooled_sample`: MMLU's N items from its 14,042, not N per subject);
    subtasks none of whose items were drawn are left out.

    Returns:
        The group's result; the result of every subtask and of every group in ``group.groups``
        (pooled from the subtasks of it that were evaluated); per subtask, its samples.
    """
    names = list(group.subtasks)
    if opts.task_data is not None:
        names = [n for n in names if find_local(opts.task_data, TASKS[n].stem, TASKS[n].split) is not None]
        if not names:
            raise DowncycleError(f"{opts.task_data}: no local files for any subtask of {group.name}")
    drawn: dict[str, list[int] | None] = dict.fromkeys(names)
    if opts.sample is not None:
        sizes = [len(load_docs(TASKS[n], TASKS[n].split, opts.task_data)) for n in names]
        drawn = dict(zip(names, pooled_sample(sizes, opts.sample, opts.seed)))
        names = [n for n in names if drawn[n]]
    subresults, samples, stats, values = {}, {}, {}, {}
    for name in names:
        subresults[name], samples[name], values[name] = evaluate_mc(model, encoder, TASKS[name], opts, drawn[name])
        stats[name] = {m: mean_stat(values[name][m]) for m in group.metrics}
    if opts.sample is not None:
        # a seeded sample of the group's items taken together: its mean and standard error are those of
        # the drawn items as one sample (a subject drawn once has no variance of its own to pool)
        for sub in [TASKS[g] for g in group.groups] + [group]:
            used = [n for n in sub.subtasks if n in values]
            if used:
                subresults[sub.name] = _sampled(sub, used, values, subresults, opts)
        return subresults.pop(group.name), subresults, samples
    for sub in [TASKS[g] for g in group.groups]:
        used = [n for n in sub.subtasks if n in stats]
        if used:
            subresults[sub.name] = _pooled(sub, used, stats, subresults, opts)
    return _pooled(group, names, stats, subresults, opts), subresults, samples


def _pooled(group: GroupSpec, names: list[str], stats: dict[str, dict[str, Stat]], results: dict[str, TaskResult],
            opts: McOptions) -> TaskResult:
    metrics = {m: _metric(pool_stats([stats[n][m] for n in names])) for m in group.metrics}
    return TaskResult(group.version, group.kind, results[names[0]].n_shot, opts.limit, sum(results[n].n for n in names), metrics,
                      subtasks=names, sample=opts.sample)


def _sampled(group: GroupSpec, names: list[str], values: dict[str, dict[str, list[float]]], results: dict[str, TaskResult],
             opts: McOptions) -> TaskResult:
    metrics = {m: _metric(mean_stat([v for n in names for v in values[n][m]])) for m in group.metrics}
    return TaskResult(group.version, group.kind, results[names[0]].n_shot, opts.limit, sum(results[n].n for n in names), metrics,
                      subtasks=names, sample=opts.sample)


def _metric(stat: Stat) -> MetricValue:
    return MetricValue(stat.value, stat.stderr)
