"""``downcycle eval`` across processes: ``torchrun --nproc_per_node N -m downcycle eval ...`` (or
accelerate's launcher, which sets the same ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/
``MASTER_PORT``).

Every process reads the same inputs and builds the same batches, in the same order, as one process
would (the same sort by length, the same cuts); batch ``k`` runs on process ``k mod N``. The
per-batch results are gathered and used in batch order, so each item's log-likelihood is the one a
single process computes from the very same batch, and every sum (a loss task's total NLL, a
document's KL) is taken in the same order: the same results.json and samples as one process.
Process 0 alone writes and prints; the others compute their share and write nothing.

One process is :data:`ONE_PROCESS`, a null object whose :meth:`Processes.merge` just runs the
computation, so the scoring code has no branch for it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import DowncycleError

__all__ = ["ONE_PROCESS", "Processes", "joined", "process_device", "refuse_across"]

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Processes:
    """This process's place among the ``world`` processes of one evaluation."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes the outputs and prints (process 0)."""
        return self.rank == 0

    def mine(self, k: int) -> bool:
        """Whether batch ``k`` (counted from 0 over every batch of a task) runs in this process."""
        return k % self.world == self.rank

    def merge(self, compute: Callable[[], dict[K, V]]) -> dict[K, V]:
        """Run ``compute`` (this process's share: a dict of results by key) and return the union of
        every process's dicts, on every process.

        A failure in any process is raised in every one (here its own exception; elsewhere a
        DowncycleError naming the process), so no process waits on the others for ever.
        """
        if self.world == 1:
            return compute()
        import torch.distributed as dist

        try:
            local, failure = compute(), None
        except Exception as e:  # noqa: BLE001 -- sent to the other processes, then raised here as it was
            local, failure = {}, e
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, (local, None if failure is None else _one_line(failure)))
        if failure is not None:
            raise failure
        for rank, (_, why) in enumerate(parts):
            if why is not None:
                raise DowncycleError(f"process {rank} of {self.world} failed: {why}")
        merged: dict[K, V] = {}
        for part, _ in parts:
            merged.update(part)
        return merged

    def share(self, value: Any) -> Any:
        """Process 0's ``value``, on every process (what only process 0 can know: its kept progress)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


ONE_PROCESS = Processes()


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, DowncycleError) else f"{type(e).__name__}: {text}" if text else type(e).__name__


def process_device(device: str, local_rank: int, world: int, gpus: int) -> tuple[str, int | None]:
    """The ``torch.distributed`` backend and CUDA device index of one of ``world`` processes.

    Args:
        device: ``--device``: ``cpu`` (gloo), or ``cuda`` / ``auto`` on a machine with ``gpus``
            CUDA GPUs (nccl, each process on ``cuda:LOCAL_RANK``).
        local_rank: the process's rank on its machine (``LOCAL_RANK``).

    Returns:
        ``("gloo", None)`` or ``("nccl", local_rank)``.

    Raises:
        DowncycleError: a device that several processes cannot share out (``cuda:N``, ``mps``), CUDA
            without a GPU, or more processes on this machine than GPUs.
    """
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device == "cpu":
        return "gloo", None
    if device == "cuda":
        if not gpus:
            raise DowncycleError(f"--device {device}: CUDA is not available on this machine")
        if local_rank >= gpus:
            raise DowncycleError(f"{world} processes: process {local_rank} of this machine has no GPU of its own "
                                 f"(it has {gpus}); start at most {gpus} per machine")
        return "nccl", local_rank
    raise DowncycleError(f"--device {device} with {world} processes: give --device cuda (each process takes "
                         "cuda:LOCAL_RANK), auto or cpu")


@contextlib.contextmanager
def joined(device: str) -> Iterator[Processes]:
    """This process's :class:`Processes`: :data:`ONE_PROCESS` unless a launcher started several
    (``WORLD_SIZE`` > 1), then the process group, joined here (and left on exit) unless the caller
    has joined one already. On a GPU machine the process's GPU becomes its current CUDA device, so
    ``cuda`` (what ``auto`` resolves to) is ``cuda:LOCAL_RANK`` for every model it loads.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        yield ONE_PROCESS
        return
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    backend, index = process_device(device, local_rank, world, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if index is not None:
        torch.cuda.set_device(index)
    ours = not dist.is_initialized()
    if ours:
        try:
            dist.init_process_group(backend)  # env://: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
        except (ValueError, RuntimeError) as e:
            raise DowncycleError(f"WORLD_SIZE={world}: could not join the other processes ({_one_line(e)})") from None
    try:
        yield Processes(dist.get_rank(), dist.get_world_size())
    finally:
        if ours:
            dist.destroy_process_group()


def refuse_across(cfg: Any, world: int) -> None:
    """What several processes do not share out (an eval config's ``--layerwise``, ``--harness``):
    refused before any model loads."""
    if cfg.layerwise:
        raise DowncycleError(f"--layerwise: not run across {world} processes (run it in one)")
    if cfg.harness:
        raise DowncycleError(f"--harness: lm-evaluation-harness tasks are not run across {world} processes (run them in one)")
