"""MMLU: 57 subject tasks (5-shot from each subject's dev split, first five examples), the four
category groups (``mmlu_stem``, ``mmlu_other``, ``mmlu_social_sciences``, ``mmlu_humanities``) and
the ``mmlu`` group, each pooling its subjects' items by size, as lm-evaluation-harness's ``mmlu``
(default variant) groups and aggregates them (its 0.4 groups pool their leaf tasks)."""

from __future__ import annotations

from .spec import GroupSpec, MultipleChoiceSpec

__all__ = ["CATEGORIES", "SUBJECTS", "mmlu_tasks"]

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
# The harness's category of each subject (the "tag" of tasks/mmlu/default/mmlu_<subject>.yaml), in its order.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": ("abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry", "college_computer_science",
             "college_mathematics", "college_physics", "computer_security", "conceptual_physics", "electrical_engineering",
             "elementary_mathematics", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
             "high_school_mathematics", "high_school_physics", "high_school_statistics", "machine_learning"),
    "other": ("business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging", "management", "marketing",
              "medical_genetics", "miscellaneous", "nutrition", "professional_accounting", "professional_medicine", "virology"),
    "social_sciences": ("econometrics", "high_school_geography", "high_school_government_and_politics", "high_school_macroeconomics",
                        "high_school_microeconomics", "high_school_psychology", "human_sexuality", "professional_psychology",
                        "public_relations", "security_studies", "sociology", "us_foreign_policy"),
    "humanities": ("formal_logic", "high_school_european_history", "high_school_us_history", "high_school_world_history",
                   "international_law", "jurisprudence", "logical_fallacies", "moral_disputes", "moral_scenarios", "philosophy",
                   "prehistory", "professional_law", "world_religions"),
}  # fmt: skip


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
    categories = tuple(f"mmlu_{c}" for c in CATEGORIES)
    tasks["mmlu"] = GroupSpec(name="mmlu", version="2", description="MMLU, 57 subjects pooled by size (5-shot), and its 4 categories",
                              subtasks=tuple(f"mmlu_{s}" for s in SUBJECTS), groups=categories)
    for category, subjects in CATEGORIES.items():
        tasks[f"mmlu_{category}"] = GroupSpec(name=f"mmlu_{category}", version="2", subtasks=tuple(f"mmlu_{s}" for s in subjects),
                                              description=f"MMLU {category.replace('_', ' ')}: {len(subjects)} subjects pooled by size")
    return tasks
