"""SLEB's greedy search (:mod:`.nll`) on a model run one decoder layer at a time
(:mod:`downcycle.layerwise`).

Every candidate model of a step keeps the current model's layers but one: as source-layer paths they
share everything before the candidate, so one :func:`~downcycle.layerwise.run_tree` per step runs
each shared prefix once and each layer once per depth, and only the layers after each candidate run
for it (what the in-memory search does with its kept states). The last state of every path goes
through the model's final norm and output layer at the predicted non-padding positions, summed as
the in-memory search sums them (float64 sum of float32 terms per batch, batches in order): the same
NLLs and the same choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import DowncycleError
from .hidden_stats import batch_mask
from .nll import GreedyRemoval

__all__ = ["greedy_removal_layerwise"]


def greedy_removal_layerwise(lw: Any, batches: Sequence[Any], k: int, *, progress: bool = False,
                             protect: Sequence[int] = ()) -> GreedyRemoval:
    """:func:`~downcycle.analysis.nll.greedy_removal` of the model ``lw`` holds layer by layer."""
    import torch

    from ..decoder import final_norm
    from ..layerwise import run_tree
    from ..output_layer import rows_nll, split_head
    from ..progress import progress_bar

    split = split_head(lw.model)
    if isinstance(split, str):
        raise DowncycleError(f"--layerwise: the NLL search needs the logits to be the last states through one linear layer ({split})")
    head, norm, num = split[1], final_norm(lw.model), lw.num_layers
    feeds, picks = [], []
    for batch in batches:
        ids, mask = batch_mask(batch)
        ids = ids.to(lw.device)
        mask = mask.to(lw.device) if mask is not None else None
        target = ids[:, 1:]
        valid = torch.ones_like(target, dtype=torch.bool) if mask is None else (mask[:, 1:].bool() & mask[:, :-1].bool())
        row, col = valid.nonzero(as_tuple=True)
        feeds.append({"input_ids": ids} if mask is None else {"input_ids": ids, "attention_mask": mask})
        picks.append((row, col, target[row, col]))
    count = sum(int(p[0].numel()) for p in picks)
    if count == 0:
        raise ValueError("no calibration tokens to predict (sequences of length 1?)")

    def mean_nlls(paths: list[tuple[int, ...]]) -> list[float]:
        sums = {p: [0.0] * len(feeds) for p in paths}

        def visit(prefix: tuple[int, ...], b: int, hidden: Any) -> None:
            if prefix in sums:
                row, col, target = picks[b]
                sums[prefix][b] = float(rows_nll(norm(hidden)[row, col], head, target).sum(dtype=torch.float64))

        with torch.inference_mode():
            run_tree(lw, paths, feeds, visit)
        out = []
        for p in paths:
            total = 0.0
            for value in sums[p]:  # batch by batch, as the in-memory search adds them
                total = total + value
            out.append(total / count)
        return out

    result = GreedyRemoval(mean_nlls([tuple(range(num))])[0])
    with progress_bar(total=k, desc="nll", unit="step", disable=not progress, leave=False) as bar:
        for _ in range(k):
            candidates = [c for c in range(num) if c not in result.removed and c not in protect]
            paths = [tuple(j for j in range(num) if j not in result.removed and j != c) for c in candidates]
            step = dict(zip(candidates, mean_nlls(paths)))
            best = min(step, key=lambda j: (step[j], j))
            result.removed.append(best)
            result.steps.append(step)
            bar.update(1)
    return result
