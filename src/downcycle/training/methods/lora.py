"""LoRA as a training method: the base is frozen and low-rank adapters (peft) train on the modules
``--lora-targets`` names. QLoRA (:mod:`.qlora`) is this on a 4-bit base.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from ...architecture import MLP_SEGMENTS, is_mlp_module
from ...errors import DowncycleError
from ...recipe import TrainConfig
from .base import Method

__all__ = ["LoraMethod", "lora_target_modules", "quiet_peft"]


def lora_target_modules(model: Any, targets: str) -> str | list[str]:
    """peft ``target_modules`` for ``--lora-targets``: ``all-linear``, ``mlp`` or a list of names."""
    if targets == "all-linear":
        return "all-linear"
    if targets == "mlp":
        import torch
        from transformers.pytorch_utils import Conv1D

        found = [name for name, mod in model.named_modules()
                 if isinstance(mod, (torch.nn.Linear, Conv1D)) and is_mlp_module(name)]
        if not found:
            raise DowncycleError(f"--lora-targets mlp: no linear layer under {'/'.join(MLP_SEGMENTS)} in this model")
        return found
    names = [t.strip() for t in targets.split(",") if t.strip()]
    module_names = [n for n, _ in model.named_modules()]
    for t in names:
        if not any(n == t or n.endswith("." + t) for n in module_names):
            raise DowncycleError(f"--lora-targets: no module of this model is named {t!r}")
    return names


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence the FutureWarning peft triggers by reading ``is_gradient_checkpointing`` (deprecated in
    transformers 5) whenever it wraps a model: not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        yield


class LoraMethod(Method):
    """LoRA through peft: the base is frozen, low-rank adapters train (Hu et al., 2021)."""

    name = "lora"
    adapter = True

    def check(self, config: TrainConfig, device: str) -> None:
        if config.train_layers is not None or config.train_modules is not None:
            raise DowncycleError(f"--train-layers/--train-modules apply to full and distill, not {self.name}")

    def base_dtype(self, precision: str) -> str:
        # The frozen base may be stored in bf16 when computing in bf16; the adapters stay float32.
        return "bfloat16" if precision == "bf16" else "float32"

    def prepare(self, model: Any, config: TrainConfig) -> Any:
        from .qlora import quiet_bitsandbytes

        with quiet_bitsandbytes():  # peft imports bitsandbytes, when installed
            from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=lora_target_modules(model, config.lora_targets), bias="none", task_type="CAUSAL_LM")
        with quiet_peft():
            return get_peft_model(model, lora)
