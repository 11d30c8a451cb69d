"""Resumable checkpoints: model, optimizer, scheduler, RNG states and data position, atomically.

A checkpoint is a directory ``OUT.run/checkpoints/step-00000012/`` written by
``accelerator.save_state`` (model in safetensors, optimizer state loaded back with
``weights_only=True``, one RNG file per process; FSDP/DeepSpeed shards handled by accelerate) plus
``trainer_state.json`` (step, tokens, scheduler state, config). It is written under a temporary
name and renamed when complete, so a crash mid-save leaves the previous checkpoint as the latest.
The data position is the step number itself (see :mod:`downcycle.training.batches`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..errors import DowncycleError

__all__ = ["RESUME_FREE_KEYS", "STATE_NAME", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "save_checkpoint"]

STATE_NAME = "trainer_state.json"
MODEL_FILE = "model.safetensors"  # accelerate's save_state: the (first) model's state dict, in safetensors
_NAME = re.compile(r"^step-(\d{8})$")
# Config fields a resumed run may change without changing what it computes.
RESUME_FREE_KEYS = ("resume", "force", "progress", "axolotl")


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first, as ``(step, path)``."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m[1]), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_NAME).is_file()]
    return sorted(found)


def latest_checkpoint(root: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(accelerator: Any, root: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` (all processes must call this) and keep only the ``keep`` newest.

    Returns:
        The checkpoint directory.
    """
    root = Path(root)
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp"  # the same name on every process: each writes its RNG state into it
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_NAME).write_text(json.dumps(state, indent=2) + "\n")
        if final.exists():  # a re-run of the same step after a resume
            shutil.rmtree(final)
        os.rename(tmp, final)
        for _, old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: Path, config: dict[str, Any], world_size: int, model: Any = None) -> dict[str, Any]:
    """Restore a checkpoint into the prepared model and optimizer; return its trainer state.

    A 4-bit (QLoRA) ``model`` re-creates its quantisation state from the source when it is loaded;
    the checkpoint's copy of that state is compared with it instead of loaded
    (:func:`~downcycle.training.methods.qlora.check_quant_state`).

    Raises:
        DowncycleError: if the checkpoint was made with a different training config, process count
            or 4-bit base (a resume must compute what the interrupted run would have).
    """
    path = Path(path)
    state = json.loads((path / STATE_NAME).read_text())
    saved = state.get("config", {})
    changed = sorted(k for k in set(saved) | set(config) if k not in RESUME_FREE_KEYS and saved.get(k) != config.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed[:4])
        raise DowncycleError(f"{path}: cannot resume with a different config ({diffs}); start a new run, or use the original options")
    if state.get("world_size") != world_size:
        raise DowncycleError(f"{path}: saved by {state.get('world_size')} process(es), resumed with {world_size}; "
                             "resume with the same number of processes")
    plain = accelerator.unwrap_model(model) if model is not None else None
    if plain is not None and getattr(plain.config, "quantization_config", None) is not None:
        from .methods.qlora import check_quant_state

        accelerator.load_state(str(path), strict=False)  # check_quant_state is the strict check
        check_quant_state(plain, path / MODEL_FILE)
    else:
        accelerator.load_state(str(path))
    return state
