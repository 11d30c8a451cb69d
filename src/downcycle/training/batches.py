"""Which packed sequences each process reads at each optimizer step.

The order is a pure function of ``(seed, step)``: epoch ``e`` is a permutation drawn from a generator
seeded with ``(seed, e)``, cut into global batches of ``micro_batch x grad_accum x world_size``
sequences; process ``r`` takes the ``r``-th contiguous slice of each global batch. Hence

* resuming needs only the step number (the data position is never stored separately), and
* one process with ``micro_batch x grad_accum = G`` sees the same global batches as ``n`` processes
  with ``G / n`` each, which is what makes a 2-process run equal a 1-process run.

Sequences are packed to one length, so every micro-batch has the same token count and a
sum-of-NLL / token-count loss is exact across micro-batches and processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DowncycleError

__all__ = ["StepPlan", "collate", "eval_batches", "open_corpus"]


class StepPlan:
    """Global batch order over ``num_sequences`` packed sequences.

    Args:
        num_sequences: length of the train split.
        micro_batch: sequences per process per forward pass.
        grad_accum: micro-batches per optimizer step.
        world_size: number of processes.
        seed: base seed of the shuffles.
    """

    def __init__(self, num_sequences: int, micro_batch: int, grad_accum: int, world_size: int, seed: int) -> None:
        self.n, self.micro_batch, self.grad_accum, self.world_size, self.seed = num_sequences, micro_batch, grad_accum, world_size, seed
        self.global_batch = micro_batch * grad_accum * world_size
        self.steps_per_epoch = num_sequences // self.global_batch
        if self.steps_per_epoch == 0:
            raise DowncycleError(f"the train split has {num_sequences} sequences, fewer than one global batch of {self.global_batch} "
                                 "(micro_batch x grad_accum x processes): build a larger corpus or lower --micro-batch/--grad-accum")
        self._epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> Any:
        """``(num_sequences,)`` LongTensor: the order of epoch ``epoch``."""
        import torch

        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return self._perm

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """The ``grad_accum`` micro-batches (lists of ``micro_batch`` indices) of process ``rank`` at ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        chunk = self.permutation(epoch)[k * self.global_batch:(k + 1) * self.global_batch]
        per_rank = self.micro_batch * self.grad_accum
        mine = chunk[rank * per_rank:(rank + 1) * per_rank].tolist()
        return [mine[i * self.micro_batch:(i + 1) * self.micro_batch] for i in range(self.grad_accum)]


def collate(dataset: Any, indices: list[int], device: Any) -> dict[str, Any]:
    """Stack ``dataset[i]["input_ids"]`` into a ``(B, T)`` batch on ``device``."""
    import torch

    ids = torch.stack([dataset[i]["input_ids"] for i in indices]).long()
    return {"input_ids": ids.to(device, non_blocking=True)}


def eval_batches(num_sequences: int, micro_batch: int, rank: int, world_size: int, limit: int | None) -> list[list[int]]:
    """Process ``rank``'s share of the first ``limit`` validation sequences, in micro-batches."""
    n = num_sequences if limit is None else min(limit, num_sequences)
    mine = list(range(rank, n, world_size))
    return [mine[i:i + micro_batch] for i in range(0, len(mine), micro_batch)]


def open_corpus(path: Path) -> tuple[Any, Any | None]:
    """The train and (if present and non-empty) val splits of a `downcycle data` corpus directory.

    Raises:
        DowncycleError: when ``path`` is not a corpus directory.
    """
    path = Path(path)
    if not (path / "corpus.json").is_file():
        raise DowncycleError(f"{path}: not a corpus directory (no corpus.json); build one with `downcycle data`")
    try:
        from ..corpus.loader import PackedDataset
    except ImportError as e:
        raise DowncycleError(f"{path}: cannot read corpora: downcycle.corpus.loader is unavailable ({e})") from None
    train = PackedDataset(path, split="train")
    try:
        val = PackedDataset(path, split="val")
    except (DowncycleError, FileNotFoundError, KeyError):
        val = None
    return train, (val if val is not None and len(val) > 0 else None)
