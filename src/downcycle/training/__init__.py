"""``downcycle train``: one training loop on accelerate, with methods as strategies.

Modules: :mod:`.run` (entry point), :mod:`.loop` (setup/train/evaluate/save/resume), :mod:`.strategy`
(the method interface; full fine-tuning), :mod:`.methods` (lora, qlora; the registry), :mod:`.distill`
(the distillation method), :mod:`.lm_loss` (the LM loss), :mod:`.losses` (distillation losses),
:mod:`.distill_loss` (distillation a chunk of positions at a time), :mod:`.optim`, :mod:`.batches`
(data order and sharding), :mod:`.checkpointing`, :mod:`.logging` (JSONL and TensorBoard loggers), :mod:`.export`, :mod:`.axolotl`.
Importing this package does not import torch.
"""

from .run import TrainResult, run_train

__all__ = ["TrainResult", "run_train"]
