"""``downcycle train``: one training loop on accelerate, with methods as strategies.

Modules: :mod:`.run` (entry point), :mod:`.loop` (setup/train/evaluate/save/resume), :mod:`.methods`
(the method interface in :mod:`.methods.base`, one module per method: :mod:`.methods.full`,
:mod:`.methods.lora`, :mod:`.methods.qlora`, :mod:`.methods.distill`; the registry), :mod:`.losses`
(one module per loss: :mod:`.losses.lm` the LM loss, :mod:`.losses.kl` the distillation losses,
:mod:`.losses.distill_chunked` distillation a chunk of positions at a time), :mod:`.optim`,
:mod:`.batches` (data order and sharding), :mod:`.checkpointing`, :mod:`.logging` (JSONL and
TensorBoard loggers), :mod:`.export`, :mod:`.axolotl`.
Importing this package does not import torch.
"""

from .run import TrainResult, run_train

__all__ = ["TrainResult", "run_train"]
