"""Training methods as strategies: each loads and prepares the model and computes the loss.

The loop (:mod:`downcycle.training.loop`) is the same for all of them. A method decides which
parameters train (all, a selection of layers, or LoRA adapters), how the model is loaded (QLoRA: a
4-bit NF4 base) and what the loss is (the LM loss, or distillation from a teacher mixed with it).
The interface is :mod:`.base`'s; one module per method: :mod:`.full`, :mod:`.lora`, :mod:`.qlora`,
:mod:`.distill`; the registry is here.
"""

from __future__ import annotations

from ...errors import DowncycleError
from .base import LossSums, Method
from .distill import DistillMethod
from .full import FullMethod, trainable_prefixes
from .lora import LoraMethod
from .qlora import QLoraMethod

__all__ = ["METHODS", "DistillMethod", "FullMethod", "LoraMethod", "LossSums", "Method", "QLoraMethod", "get_method",
           "trainable_prefixes"]


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
