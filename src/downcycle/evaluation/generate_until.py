"""Evaluating one generative task (GSM8K) on one model: prompts, greedy generation, answer
extraction and exact match, each as lm-evaluation-harness does it for ``generate_until`` tasks."""

from __future__ import annotations

from typing import Any

from ..errors import DowncycleError
from ..generation.greedy import Generation, greedy_generate
from .encoding import Encoder
from .metrics import mean_stat
from .multiple_choice import McOptions
from .results import MetricValue, TaskResult
from .task_data import TaskDocs, docs_and_fewshot_pool
from .tasks.generative_spec import GenerativeSpec, harness_fewshots

__all__ = ["build_contexts", "evaluate_generative"]


def build_contexts(spec: GenerativeSpec, opts: McOptions) -> tuple[list[dict], list[str], int]:
    """The evaluated documents, their prompts and the number of shots.

    Raises:
        DowncycleError: no documents, or fewer few-shot examples than shots.
    """
    return _contexts(spec, opts)[1:]


def _contexts(spec: GenerativeSpec, opts: McOptions) -> tuple[TaskDocs, list[dict], list[str], int]:
    sel = docs_and_fewshot_pool(spec, opts.task_data, opts.limit, opts.shots, opts.sample, opts.seed)
    docs, k, pool = sel.docs, sel.shots, sel.pool
    if k:
        if len(pool) < k + (spec.fewshot_split == spec.split):
            raise DowncycleError(f"task {spec.name}: --shots {k} needs {k} few-shot examples, "
                                 f"the {spec.fewshot_split} split has {len(pool)}")
    shots = harness_fewshots(pool, k, docs, opts.seed, spec.fewshot_split == spec.split)
    return sel, docs, [spec.context(d, s) for d, s in zip(docs, shots)], k


def evaluate_generative(model: Any, encoder: Encoder, spec: GenerativeSpec, opts: McOptions) -> tuple[TaskResult, list[dict]]:
    """Generate an answer for every document of ``spec`` and score it.

    Prompts are encoded as the harness encodes them (the tokenizer's default special tokens) and
    left-truncated to ``max_length - max_gen_toks`` tokens so the answer fits the model.

    Returns:
        The task result (one ``exact_match[<filter>]`` metric per filter, with standard errors) and
        per-document samples (generation, extracted answers, reference, metrics).
    """
    sel, docs, contexts, k = _contexts(spec, opts)
    room = encoder.max_length - spec.max_gen_toks
    if room <= 0:
        raise DowncycleError(f"task {spec.name}: the model's maximum length {encoder.max_length} leaves no room for "
                             f"a prompt before {spec.max_gen_toks} generated tokens")
    prompts = [encoder.encode(c)[-room:] for c in contexts]

    def run() -> dict[int, Generation]:  # this process's share of the batches (:mod:`.distributed`)
        gens = greedy_generate(model, encoder.tokenizer, prompts, until=spec.until, max_new_tokens=spec.max_gen_toks,
                               batch_size=opts.batch_size, progress=opts.progress, desc=spec.name, mine=opts.processes.mine)
        return {i: g for i, g in enumerate(gens) if g is not None}

    generated = opts.processes.merge(run)
    generations = [generated[i] for i in range(len(prompts))]
    per_doc: dict[str, list[float]] = {m: [] for m in spec.metrics}
    samples = []
    for d, (doc, gen) in enumerate(zip(docs, generations)):
        extracted, values = spec.score(gen.text, doc)
        for m, v in values.items():
            per_doc[m].append(v)
        samples.append({"doc": sel.indices[d], "question": doc.get("question"), "target": spec.target(doc), "generation": gen.text,
                        "stop": gen.stop, "new_tokens": len(gen.tokens), "extracted": extracted, **values})
    metrics = {m: MetricValue(s.value, s.stderr) for m, s in ((m, mean_stat(v)) for m, v in per_doc.items())}
    return (TaskResult(spec.version, spec.kind, k, opts.limit, len(docs), metrics, sample=opts.sample,
                       indices=sel.indices if sel.sampled else None), samples)
