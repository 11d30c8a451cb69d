"""``--harness``: run lm-evaluation-harness's own tasks on a model loaded by downcycle, for anything
not built in. Optional: needs ``pip install lm-eval``; the model is handed to the harness's HF
backend as an object, so loading stays safetensors-only and remote code stays off unless asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from .results import MetricValue, TaskResult

__all__ = ["HARNESS_PREFIX", "run_harness_tasks"]
HARNESS_PREFIX = "harness:"  # results keys: harness:<task>, apart from the built-in tasks


def run_harness_tasks(model: Any, tokenizer: Any, tasks: list[str], *, limit: int | None, shots: int | None,
                      batch_size: int, device: str, include_path: Path | None = None) -> dict[str, TaskResult]:
    """Evaluate ``tasks`` (lm-eval task or group names) and return them in downcycle's schema.

    Args:
        include_path: a directory of extra lm-eval task YAMLs (e.g. pointing tasks at local files).

    Raises:
        DowncycleError: lm-eval is not installed, or it does not know a task.
    """
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise DowncycleError("--harness needs lm-evaluation-harness (pip install lm-eval)") from None
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise DowncycleError(f"--harness: lm-eval does not know task {unknown[0]!r}")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    raw = simple_evaluate(model=lm, tasks=tasks, num_fewshot=shots, limit=limit, task_manager=manager)
    out: dict[str, TaskResult] = {}
    for task, values in raw["results"].items():
        metrics: dict[str, MetricValue] = {}
        for key, value in values.items():
            name, _, filt = key.partition(",")
            if not filt or "_stderr" in name or not isinstance(value, (int, float)):
                continue
            stderr = values.get(f"{name}_stderr,{filt}")
            label = name if filt == "none" else f"{name}[{filt}]"
            metrics[label] = MetricValue(float(value), float(stderr) if isinstance(stderr, (int, float)) else None)
        n = raw.get("n-samples", {}).get(task, {}).get("effective", 0)
        out[HARNESS_PREFIX + task] = TaskResult(version=str(raw.get("versions", {}).get(task, "")), kind="harness",
                                                n_shot=int(raw.get("n-shot", {}).get(task, shots or 0) or 0), limit=limit,
                                                n=int(n), metrics=metrics)
    return out
