"""GSM8K (Cobbe et al. 2021) grade-school math word problems, as lm-evaluation-harness's ``gsm8k``
task (``tasks/gsm8k/gsm8k.yaml``, version 3.0): 5-shot from the train split with its default
seeded sampler, ``"Question: ...\\nAnswer:"`` prompts whose few-shot answers are the full worked
solutions ending in ``#### <number>``, greedy generation until ``Question:``, ``</s>`` or
``<|im_end|>`` (or EOS, or 256 new tokens), and exact match of two extractions:

* ``strict-match``: the number after ``#### `` (the format the few-shot answers teach);
* ``flexible-extract``: the last number-like string anywhere in the generation.

Both are compared with the reference's ``#### `` answer after removing commas, dollar signs, a
trailing period and everything up to ``#### ``, ignoring case.
"""

from __future__ import annotations

from ..answers import ExactMatch, RegexExtract
from .generative_spec import GenerativeSpec

__all__ = ["GSM8K"]

GSM8K = GenerativeSpec(
    name="gsm8k", version="3.0", hf_path="openai/gsm8k", hf_name="main", split="test", stem="gsm8k",
    fewshot_split="train", default_shots=5,
    description="GSM8K grade-school math, greedy generation, exact match of the final number (test, 5-shot)",
    text=lambda d: f"Question: {d['question']}\nAnswer:",
    target=lambda d: d["answer"],
    until=("Question:", "</s>", "<|im_end|>"),
    max_gen_toks=256,
    filters={
        "strict-match": RegexExtract(r"#### (\-?[0-9\.\,]+)", group_select=0),
        "flexible-extract": RegexExtract(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1),
    },
    metric=ExactMatch(regexes_to_ignore=(",", r"\$", r"(?s).*#### ", r"\.$"), ignore_case=True),
)
