"""Training methods as strategies: each loads and prepares the model and computes the loss.

The loop (:mod:`downcycle.training.loop`) is the same for all of them. A method decides which
parameters train (all, a selection of layers, or LoRA adapters), how the model is loaded (QLoRA: a
4-bit NF4 base) and what the loss is (the LM loss, or distillation from a teacher mixed with it).
The interface and full fine-tuning are :mod:`.strategy`'s, distillation is :mod:`.distill`'s; LoRA,
QLoRA and the registry are here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from ..architecture import MLP_SEGMENTS, is_mlp_module
from ..errors import DowncycleError
from ..recipe import TrainConfig
from .distill import DistillMethod
from .strategy import FullMethod, LossSums, Method, trainable_prefixes

__all__ = ["METHODS", "DistillMethod", "FullMethod", "LoraMethod", "LossSums", "Method", "QLoraMethod", "get_method",
           "trainable_prefixes"]


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
        from .quantized import quiet_bitsandbytes

        with quiet_bitsandbytes():  # peft imports bitsandbytes, when installed
            from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=lora_target_modules(model, config.lora_targets), bias="none", task_type="CAUSAL_LM")
        with quiet_peft():
            return get_peft_model(model, lora)


class QLoraMethod(LoraMethod):
    """QLoRA: a 4-bit NF4 base (bitsandbytes) with LoRA adapters on top (Dettmers et al., 2023), on
    any device bitsandbytes supports (CUDA GPUs and CPUs among them; see :mod:`.quantized`)."""

    name = "qlora"

    def check(self, config: TrainConfig, device: str) -> None:
        from .quantized import require_bitsandbytes

        super().check(config, device)
        require_bitsandbytes(device.split(":")[0])

    def load(self, config: TrainConfig, path: str, device: str, precision: str) -> Any:
        from ..loading import load_model
        from .quantized import keep_training_numerics, quiet_bitsandbytes, release_checkpoint_file

        # Quantised from the float32 weights whatever the compute dtype: one 4-bit base for fp32 and
        # bf16 runs, and the tensors left unquantised (embeddings, norms, head) stay exact
        # (prepare_model_for_kbit_training would cast them to float32 anyway).
        compute = "bfloat16" if precision == "bf16" else "float32"
        with quiet_bitsandbytes():
            model = load_model(path, dtype="float32", compute_dtype=compute, device=device, trust_remote_code=config.trust_remote_code,
                               load_in_4bit=True)
        if keep_training_numerics(model) == 0:
            raise DowncycleError(f"--method qlora: no linear layer of {path} was quantised to 4 bits")
        release_checkpoint_file(model)
        return model

    def prepare(self, model: Any, config: TrainConfig) -> Any:
        from peft import prepare_model_for_kbit_training

        # Casts norms to float32 and enables input grads; checkpointing is the loop's decision.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return super().prepare(model, config)


# name -> strategy class (`downcycle ls` lists the names)
METHODS: dict[str, type[Method]] = {
    "full": FullMethod,
    "lora": LoraMethod,
    "qlora": QLoraMethod,
    "distill": DistillMethod,
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]()
    except KeyError:
        raise DowncycleError(f"--method {name!r}: unknown (known: {', '.join(METHODS)})") from None
