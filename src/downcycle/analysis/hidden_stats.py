"""All layer-to-layer similarities of a model's residual stream, from ONE streaming forward pass.

Which states are compared. ``x_l`` (``l = 0..L-1``) is the hidden state *entering* decoder layer
``l`` (``x_0`` is the embedding output) and ``x_L`` is the output of the last decoder layer *before*
the final norm. Removing layers ``l..l+n-1`` replaces ``x_{l+n}`` by ``x_l``, so these are the
states the literature compares. Note that ``output_hidden_states=True`` in ``transformers`` returns
``x_0..x_{L-1}`` and then the last layer's output *after* the final norm for most families (checked
for Llama, Qwen2 and GPT-2 in tests/analysis/test_hidden_stats.py), which would make every
``d(l, L)`` compare a normalised state with un-normalised ones.

How. A forward pre-hook on every decoder layer copies its input (float32) into a per-batch buffer
``(T, L+1, d)`` of the batch's ``T`` non-padding tokens; a forward hook on the last layer adds its
output and stops the forward (the final norm and LM head are not needed). Then one batched matmul
per chunk of tokens gives each token's ``(L+1) x (L+1)`` Gram matrix, in float64, normalised by its
own diagonal into cosines and reduced into running sums -- sums over sums, divided once at the end.
Only the current batch's states are held, so memory is bounded by the batch, never by the number of
calibration tokens.

Precision. ``arccos`` is ill-conditioned near ``cos = 1``, exactly where redundant layers are: a
float32 dot product of two unit vectors carries an error of ~1e-7, which ``arccos`` turns into an
angular distance of ~1e-4 for two *identical* states. Forming the Gram in float64 and dividing by its
own diagonal makes identical states exactly ``cos = 1`` and near-identical ones accurate to ~1e-8.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..decoder import find_decoder_layers, layer_input

__all__ = ["HiddenStats", "as_batches", "batch_mask", "collect_hidden_stats", "collect_hidden_stats_layerwise", "token_cosines"]


@dataclass
class HiddenStats:
    """Running sums over calibration tokens, for every pair of states ``(x_i, x_j)``, ``i, j = 0..L``.

    Attributes (float64 tensors of shape ``(L+1, L+1)``, symmetric):
        cos_sum: sum over all non-padding tokens of ``cos(x_i, x_j)``.
        angle_sum: sum over all non-padding tokens of ``arccos(cos(x_i, x_j)) / pi``.
        last_cos_sum, last_angle_sum: the same over the last non-padding token of each sequence.
        tokens: number of tokens summed; sequences: number of sequences (= last tokens) summed.
    """

    num_layers: int
    cos_sum: Any
    angle_sum: Any
    last_cos_sum: Any
    last_angle_sum: Any
    tokens: int = 0
    sequences: int = 0

    @classmethod
    def zeros(cls, num_layers: int) -> HiddenStats:
        import torch

        z = lambda: torch.zeros(num_layers + 1, num_layers + 1, dtype=torch.float64)
        return cls(num_layers, z(), z(), z(), z())

    def add(self, cos: Any, is_last: Any) -> None:
        """Add token cosines: ``cos`` ``(T, L+1, L+1)`` float64, ``is_last`` ``(T,)`` bool marking
        each sequence's last token."""
        import torch

        angle = torch.arccos(cos).div_(math.pi)  # (T, L+1, L+1)
        self.cos_sum += cos.sum(0).cpu()
        self.angle_sum += angle.sum(0).cpu()
        self.last_cos_sum += cos[is_last].sum(0).cpu()
        self.last_angle_sum += angle[is_last].sum(0).cpu()
        self.tokens += cos.shape[0]
        self.sequences += int(is_last.sum())

    def mean(self, name: str) -> Any:
        """``cos`` / ``angle`` (over all tokens) or ``last_cos`` / ``last_angle``: the mean matrix."""
        total = getattr(self, f"{name}_sum")
        count = self.sequences if name.startswith("last") else self.tokens
        if count == 0:
            raise ValueError("no calibration tokens were seen")
        return total / count


def batch_mask(batch: Any) -> tuple[Any, Any]:
    """``(input_ids, attention_mask or None)`` of a batch given as a tensor, a tuple or a mapping."""
    if isinstance(batch, dict):
        return batch["input_ids"], batch.get("attention_mask")
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def as_batches(input_ids: Any, batch_size: int, attention_mask: Any = None) -> list[dict[str, Any]]:
    """Split ``(N, S)`` token ids (and an optional mask) into batches of ``batch_size`` rows."""
    out = []
    for i in range(0, input_ids.shape[0], batch_size):
        b = {"input_ids": input_ids[i : i + batch_size]}
        if attention_mask is not None:
            b["attention_mask"] = attention_mask[i : i + batch_size]
        out.append(b)
    return out


class _Stop(Exception):
    """Raised by the last layer's hook: everything after the decoder layers is not needed."""


def collect_hidden_stats(model: Any, batches: Iterable[Any], *, progress: bool = False, total: int | None = None) -> HiddenStats:
    """One forward pass over ``batches``, reduced on the fly into :class:`HiddenStats`.

    Args:
        model: a loaded ``transformers`` causal LM (any family whose decoder layers form one
            ``nn.ModuleList``), in eval mode, on the device its batches are moved to.
        batches: ``(B, S)`` LongTensors of input ids, or ``{"input_ids", "attention_mask"}``
            mappings / ``(ids, mask)`` tuples; mask 0 marks padding, which is ignored.
        progress: show a tqdm bar over batches; total: its length, when ``batches`` has none.

    Returns:
        the sums over every non-padding token (and every sequence's last token).
    """
    import torch

    _, layers = find_decoder_layers(model)
    n = len(layers)
    stats = HiddenStats.zeros(n)
    device = next(model.parameters()).device
    state: dict[str, Any] = {}

    def put(index: int, hidden: Any) -> None:
        flat = hidden.reshape(-1, hidden.shape[-1])  # (B*S, d)
        if state["keep"] is not None:
            flat = flat[state["keep"]]
        if "buf" not in state:
            state["buf"] = torch.empty(flat.shape[0], n + 1, flat.shape[1], dtype=torch.float32, device=flat.device)
        state["buf"][:, index] = flat

    def pre_hook(index: int):
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            put(index, layer_input(args, kwargs))

        return hook

    def last_hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        put(n, output[0] if isinstance(output, (tuple, list)) else output)
        raise _Stop

    handles = [layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles.append(layers[-1].register_forward_hook(last_hook, with_kwargs=True))
    bar = _bar(batches, progress, total)
    try:
        with torch.inference_mode():
            for batch in bar:
                ids, mask = batch_mask(batch)
                ids = ids.to(device)
                mask = mask.to(device) if mask is not None else None
                state.clear()
                state["keep"], last = _token_selection(ids, mask)
                try:
                    model(input_ids=ids, attention_mask=mask, use_cache=False)
                except _Stop:
                    pass
                else:  # pragma: no cover -- a model that never called its last layer
                    raise RuntimeError("the forward pass finished without reaching the last decoder layer")
                _reduce(stats, state.pop("buf"), last)
    finally:
        for h in handles:
            h.remove()
        state.clear()
    return stats


def collect_hidden_stats_layerwise(lw: Any, batches: list[Any], *, budget: int | None = None, progress: bool = False) -> HiddenStats:
    """:func:`collect_hidden_stats` of a model run one decoder layer at a time
    (:mod:`downcycle.layerwise`): the same states, the same float64 sums, bitwise. Each batch's
    ``(T, d)`` float32 states are kept until the last layer has run (memory up to ``budget``, then
    disk: ``L+1`` states of every calibration token in all), then reduced as the in-memory pass does."""
    import torch

    from ..layerwise import StateStore, run_layerwise
    from ..layerwise.engine import STATE_BUDGET

    n = lw.num_layers
    stats = HiddenStats.zeros(n)
    selections = []
    for batch in batches:
        ids, mask = batch_mask(batch)
        selections.append(_token_selection(ids.to(lw.device), mask.to(lw.device) if mask is not None else None))
    kept = StateStore(STATE_BUDGET if budget is None else budget)

    def visit(l: int, b: int, hidden: Any) -> None:
        flat = hidden.reshape(-1, hidden.shape[-1])  # (B*S, d)
        keep = selections[b][0]
        kept.put((b, l), (flat[keep] if keep is not None else flat).to(torch.float32))

    with kept:
        run_layerwise(lw, batches, visit, budget=STATE_BUDGET if budget is None else budget, progress=progress)
        for b, (_, last) in enumerate(selections):
            _reduce(stats, torch.stack([kept.pop((b, l)) for l in range(n + 1)], dim=1), last)
    return stats


def _reduce(stats: HiddenStats, buf: Any, last: Any) -> None:
    """Add one batch's states ``buf`` ``(T, L+1, d)`` to ``stats``, a chunk of tokens at a time;
    ``last``: the indices of each sequence's last token among the ``T``."""
    import torch

    is_last = torch.zeros(buf.shape[0], dtype=torch.bool, device=buf.device)
    is_last[last] = True
    step = _chunk_tokens(buf.shape[1], buf.shape[2])
    for start in range(0, buf.shape[0], step):
        stats.add(token_cosines(buf[start : start + step]), is_last[start : start + step])


def token_cosines(states: Any) -> Any:
    """Every pairwise cosine of each token's states.

    Args:
        states: ``(T, K, d)``, the ``K`` states of ``T`` tokens (any float dtype).

    Returns:
        ``(T, K, K)`` float64 cosines in ``[-1, 1]``: the float64 Gram matrix divided by the outer
        product of its diagonal's square roots (a zero state has cosine 0 with everything).
    """
    import torch

    x = states.double()
    gram = torch.bmm(x, x.transpose(1, 2))  # (T, K, K)
    norm = gram.diagonal(dim1=1, dim2=2).sqrt().clamp_min(1e-300)  # (T, K)
    return gram.div_(norm[:, :, None]).div_(norm[:, None, :]).clamp_(-1.0, 1.0)


def _chunk_tokens(states: int, hidden: int, budget_bytes: int = 64 * 2**20) -> int:
    """Tokens per float64 Gram chunk, so the float64 copy of the states stays within ``budget_bytes``."""
    return max(1, budget_bytes // (states * hidden * 8))


def _token_selection(ids: Any, mask: Any) -> tuple[Any, Any]:
    """Indices of the non-padding tokens in the flattened batch (None: all of them), and of each
    sequence's last non-padding token among those kept."""
    import torch

    b, s = ids.shape
    if mask is None or bool(mask.all()):
        return None, torch.arange(1, b + 1, device=ids.device) * s - 1
    mask = mask.bool()
    keep = mask.reshape(-1).nonzero().squeeze(1)  # (T,)
    # position of each sequence's last kept token: cumulative count of kept tokens up to it, minus 1
    counts = mask.sum(1)
    if bool((counts == 0).any()):
        raise ValueError("a calibration sequence has no non-padding token")
    pos = torch.arange(s, device=ids.device).expand(b, s)
    last_pos = torch.where(mask, pos, -1).amax(1)  # (B,) last kept position per row
    rank = mask.reshape(-1).cumsum(0).reshape(b, s) - 1  # index into keep of every kept token
    return keep, rank[torch.arange(b, device=ids.device), last_pos]


def _bar(batches: Iterable[Any], enabled: bool, total: int | None) -> Iterator[Any]:
    if not enabled:
        return iter(batches)
    from ..progress import progress_bar

    return progress_bar(batches, total=total if total is not None else (len(batches) if hasattr(batches, "__len__") else None),
                desc="analyze", unit="batch", leave=False)
