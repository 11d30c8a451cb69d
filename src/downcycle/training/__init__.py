"""``downcycle train``: one training loop on accelerate, with methods as strategies.

Modules: :mod:`.run` (entry point), :mod:`.loop` (setup/train/evaluate/save/resume), :mod:`.methods`
(full, lora, qlora, distill), :mod:`.losses` (distillation losses), :mod:`.distill_loss` (distillation
a chunk of positions at a time), :mod:`.optim`, :mod:`.batches`
(data order and sharding), :mod:`.checkpointing`, :mod:`.logging`, :mod:`.export`, :mod:`.axolotl`.
Importing this package does not import torch.
"""

from .run import TrainResult, run_train

__all__ = ["TrainResult", "run_train"]
