"""What a generative task is: a prompt, a reference answer, how to generate (greedy, stop
sequences, token budget), how to pull answers out of the generation and how to compare them.

The prompt is rendered as lm-evaluation-harness renders a plain-text ``generate_until`` task:
for each few-shot example ``text + target_delimiter + target + fewshot_delimiter``, then the
document's ``text`` with nothing after it. Few-shot examples come from the harness's default
sampler: one generator seeded once (``--seed``, the harness's default 1234) and drawn from in
document order, ``k`` examples per document (``k + 1`` minus the document itself when the few-shot
split is the evaluated split).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..answers import ExactMatch, RegexExtract
from .spec import Doc, TaskSource

__all__ = ["GenerativeSpec", "harness_fewshots"]


@dataclass(frozen=True)
class GenerativeSpec(TaskSource):
    """One generative task (``downcycle eval --tasks NAME``).

    Attributes:
        name, version, hf_path, hf_name, split, stem, fewshot_split, process, description,
            default_shots: as in :class:`~downcycle.evaluation.tasks.spec.MultipleChoiceSpec`.
        text: doc -> the prompt of one document (few-shot examples reuse it).
        target: doc -> the reference answer (shown after few-shot prompts, compared after extraction).
        until: stop sequences; the model's EOS token always stops too.
        max_gen_toks: new tokens per document at most (the harness's default 256).
        filters: filter name -> answer extraction; each gives one ``<metric>[<filter>]`` result.
        metric: how an extracted answer is compared with the reference.
    """

    text: Callable[[Doc], str]
    target: Callable[[Doc], str]
    filters: dict[str, RegexExtract]
    metric: ExactMatch
    until: tuple[str, ...] = ()
    max_gen_toks: int = 256
    fewshot_split: str | None = None
    process: Callable[[Doc], Doc] | None = None
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    default_shots: int = 0
    description: str = ""
    metric_name: str = "exact_match"
    kind: str = field(default="generative", init=False)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Reported metric names: ``exact_match[strict-match]``, ... (as ``--harness`` labels them)."""
        return tuple(f"{self.metric_name}[{f}]" for f in self.filters)

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        """The prompt generation continues from: the few-shot examples, then ``doc``'s text."""
        parts = [self.text(s) + self.target_delimiter + self.target(s) + self.fewshot_delimiter for s in shots]
        return "".join(parts) + self.text(doc)

    def score(self, generation: str, doc: Doc) -> tuple[dict[str, str], dict[str, float]]:
        """(extracted answer per filter, metric value per reported metric) of one generation."""
        extracted = {f: extract(generation) for f, extract in self.filters.items()}
        reference = self.target(doc)
        values = {f"{self.metric_name}[{f}]": self.metric(answer, reference) for f, answer in extracted.items()}
        return extracted, values


def harness_fewshots(pool: list[Doc], k: int, docs: list[Doc], seed: int, same_split: bool) -> list[list[Doc]]:
    """Few-shot examples for every document, drawn as the harness's default sampler draws them.

    Args:
        pool: the few-shot split, in file order.
        k: examples per document.
        docs: the evaluated documents, in order (the generator advances once per document).
        seed: the generator's seed.
        same_split: the pool is the evaluated split: draw ``k + 1`` and drop the document itself.
    """
    if k == 0:
        return [[] for _ in docs]
    rnd = random.Random(seed)
    out = []
    for doc in docs:
        if same_split:
            drawn = [d for d in rnd.sample(pool, k + 1) if d != doc][:k]
            if len(drawn) < k:  # the document occurs twice in the pool: draw again without it
                drawn = rnd.sample([d for d in pool if d != doc], k)
        else:
            drawn = rnd.sample(pool, k)
        out.append(drawn)
    return out
