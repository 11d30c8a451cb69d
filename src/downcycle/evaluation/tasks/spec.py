"""What a benchmark task is: a small, versioned spec of data, prompt, choices and gold answer.

A multiple-choice spec turns one document into the exact strings the evaluation harness scores:
``context`` (description + few-shot examples + the question) and one ``target_delimiter + choice``
continuation per choice, or, for "partial" tasks like Winogrande, one context per choice and one
shared continuation. Metrics (acc, acc_norm, acc_bytes) follow the harness's definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Doc = dict[str, Any]

__all__ = ["Doc", "GroupSpec", "MultipleChoiceSpec", "Request", "TaskSource"]


@dataclass(frozen=True)
class Request:
    """The strings scored for one document: ``len(contexts) == len(continuations) == n_choices``.

    Attributes:
        contexts: per choice, the conditioning text (all equal unless the task is partial).
        continuations: per choice, the scored text (all equal when the task is partial).
        choices: the choice strings whose lengths normalise acc_norm / acc_bytes.
        gold: index of the correct choice.
    """

    contexts: list[str]
    continuations: list[str]
    choices: list[str]
    gold: int


@dataclass(frozen=True)
class TaskSource:
    """Where a task's items come from and which version of their handling this is; shared by every
    kind of task (see the Attributes of :class:`MultipleChoiceSpec`)."""

    name: str
    version: str
    hf_path: str
    hf_name: str | None
    split: str
    stem: str


@dataclass(frozen=True)
class MultipleChoiceSpec(TaskSource):
    """One multiple-choice task.

    Attributes:
        name: registry name (``downcycle eval --tasks NAME``).
        version: bumped whenever prompts or data handling change; recorded in results.
        hf_path, hf_name: the Hugging Face dataset the items come from (when online).
        split: the evaluated split; ``fewshot_split`` the split few-shot examples are drawn from.
        stem: local file stem: ``<data_dir>/<stem>.<split>.{jsonl,parquet}`` or a ``save_to_disk`` dir.
        text: doc -> question text (for partial tasks: doc -> gold index, unused).
        choices: doc -> choice strings (partial tasks: the contexts with each option filled in).
        gold: doc -> index of the correct choice.
        continuation: partial tasks only: doc -> the shared continuation after the blank.
        preamble: doc -> text put before everything (MMLU's subject line), or None.
        description: one line for ``downcycle ls``.
        process: doc -> doc, applied once when loading (HellaSwag's preprocessing).
        metrics: reported metrics, as the harness's task config lists them.
        fewshot_sampler: ``first_n`` (the first k docs of the few-shot split, as the harness's MMLU) or
            ``random`` (seeded; not identical to the harness's sampler).
        default_shots: shots used when ``--shots`` is not given.
        score: (doc, log-likelihoods) -> metrics, for tasks whose metric is not acc/acc_norm
            (TruthfulQA MC2); None uses :func:`downcycle.evaluation.metrics.doc_metrics`.
    """

    text: Callable[[Doc], Any]
    choices: Callable[[Doc], list[str]]
    gold: Callable[[Doc], int]
    fewshot_split: str | None = None
    continuation: Callable[[Doc], str] | None = None
    preamble: Callable[[Doc], str] | None = None
    process: Callable[[Doc], Doc] | None = None
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    fewshot_sampler: Literal["first_n", "random"] = "random"
    default_shots: int = 0
    description: str = ""
    score: Callable[[Doc, list[float]], dict[str, float]] | None = None
    kind: str = field(default="multiple_choice", init=False)

    @property
    def partial(self) -> bool:
        return self.continuation is not None

    def answer(self, doc: Doc) -> str:
        """The gold answer as it appears in a few-shot example."""
        return self.continuation(doc) if self.partial else self.choices(doc)[self.gold(doc)]

    def question(self, doc: Doc) -> str:
        """The text a few-shot example shows before its answer."""
        return self.choices(doc)[self.gold(doc)] if self.partial else self.text(doc)

    def request(self, doc: Doc, shots: list[Doc]) -> Request:
        """The strings to score for ``doc`` after the few-shot examples ``shots``.

        Plain-text rendering as in the harness: description, then for each shot
        ``question + target_delimiter + answer + fewshot_delimiter``, then the question; each
        continuation is ``target_delimiter + choice`` (partial tasks: ``+ continuation``).
        """
        prefix = self.preamble(doc) if self.preamble else ""
        for shot in shots:
            prefix += self.question(shot) + self.target_delimiter + self.answer(shot) + self.fewshot_delimiter
        choices = self.choices(doc)
        if self.partial:
            tail = self.target_delimiter + self.continuation(doc)
            return Request([prefix + c for c in choices], [tail] * len(choices), choices, self.gold(doc))
        context = prefix + self.text(doc)
        return Request([context] * len(choices), [self.target_delimiter + c for c in choices], choices, self.gold(doc))


@dataclass(frozen=True)
class GroupSpec:
    """A task made of subtasks whose metrics are pooled over all their items (MMLU's 57 subjects),
    as the harness aggregates with ``weight_by_size: true``; ``groups`` names groups over subsets of
    the subtasks reported with it (MMLU's categories), pooled from the same items."""

    name: str
    version: str
    subtasks: tuple[str, ...]
    groups: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("acc",)
    description: str = ""
    kind: str = field(default="group", init=False)
