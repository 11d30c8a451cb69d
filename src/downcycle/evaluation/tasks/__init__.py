"""The evaluation task registry: ``TASKS`` maps a name to its spec (listed by ``downcycle ls``).

``loss`` is held-out language modelling (NLL, perplexity, bits per byte); ``gsm8k`` is generative
(greedy generation, answer extraction, exact match); the others are multiple-choice benchmarks
scored as lm-evaluation-harness scores them, and ``mmlu`` is a group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import CATALOG, hellaswag_preprocess
from .generative_spec import GenerativeSpec, harness_fewshots
from .gsm8k import GSM8K
from .mmlu import SUBJECTS, mmlu_tasks
from .spec import Doc, GroupSpec, MultipleChoiceSpec, Request
from .truthfulqa import TRUTHFULQA

__all__ = [
    "SUBJECTS",
    "TASKS",
    "Doc",
    "GenerativeSpec",
    "GroupSpec",
    "LossSpec",
    "MultipleChoiceSpec",
    "Request",
    "get_task",
    "harness_fewshots",
    "hellaswag_preprocess",
]


@dataclass(frozen=True)
class LossSpec:
    """Held-out loss on ``--data``: NLL per token, perplexity and bits per byte."""

    name: str = "loss"
    description: str = "held-out NLL, perplexity and bits per byte on --data (sliding window)"
    version: str = "1"
    metrics: tuple[str, ...] = ("nll", "perplexity", "bits_per_byte")
    kind: str = field(default="loss", init=False)


TASKS: dict[str, LossSpec | MultipleChoiceSpec | GroupSpec | GenerativeSpec] = {
    "loss": LossSpec(), **CATALOG, **TRUTHFULQA, "gsm8k": GSM8K, **mmlu_tasks()}


def get_task(name: str) -> LossSpec | MultipleChoiceSpec | GroupSpec | GenerativeSpec:
    from ...errors import DowncycleError

    if name not in TASKS:
        known = [n for n in TASKS if not n.startswith("mmlu_")]  # "loss" among them, first
        raise DowncycleError(f"unknown task {name!r} (known: {', '.join(known)}, mmlu_<subject>)")
    return TASKS[name]
