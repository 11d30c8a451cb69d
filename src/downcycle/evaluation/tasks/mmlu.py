"""MMLU: 57 subject tasks (5-shot from each subject's dev split, first five examples) and the
``mmlu`` group that pools their items, as lm-evaluation-harness's ``mmlu`` (default variant) does."""

from __future__ import annotations

from .spec import GroupSpec, MultipleChoiceSpec

__all__ = ["SUBJECTS", "mmlu_tasks"]

SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)  # fmt: skip
_LETTERS = ["A", "B", "C", "D"]


def _text(doc: dict) -> str:
    c = doc["choices"]
    return f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"


def _subject(subject: str) -> MultipleChoiceSpec:
    line = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    return MultipleChoiceSpec(
        name=f"mmlu_{subject}", version="1.0", hf_path="cais/mmlu", hf_name=subject, split="test", stem=f"mmlu_{subject}",
        fewshot_split="dev", fewshot_sampler="first_n", default_shots=5, metrics=("acc",),
        text=_text, choices=lambda d: list(_LETTERS), gold=lambda d: int(d["answer"]), preamble=lambda d, s=line: s,
        description=f"MMLU {subject.replace('_', ' ')} (test, 5-shot from dev)",
    )


def mmlu_tasks() -> dict[str, MultipleChoiceSpec | GroupSpec]:
    tasks: dict[str, MultipleChoiceSpec | GroupSpec] = {f"mmlu_{s}": _subject(s) for s in SUBJECTS}
    tasks["mmlu"] = GroupSpec(name="mmlu", version="2", description="MMLU, 57 subjects pooled by size (5-shot)", subtasks=tuple(f"mmlu_{s}" for s in SUBJECTS))
    return tasks
