"""Log-likelihood scoring of continuations, all choices of a question from one shared prefix.

One row of a batch packs the prefix the choices share (usually the whole context) followed by each
choice's remaining input tokens (its continuation without its last token, which is only a target)::

    tokens     c0 c1 c2 | a0 a1 | b0 b1 b2
    positions   0  1  2 |  3  4 |  3  4  5
    segment     0  0  0 |  1  1 |  2  2  2

with a 4-D attention mask that lets a token see earlier tokens of the prefix and of its own
segment only, so every choice is computed exactly as if it followed the context alone. The context
runs once instead of once per choice, the output layer runs only at the positions whose
predictions are scored (``logits_to_keep``), and rows holding at most one branch (single-token
answers like MMLU's " A") need no custom mask at all. A prefix that every question of a task
shares (MMLU's subject line and five examples) runs once, and its keys/values are reused by every
batch (in memory; a model run layer by layer runs the same batches without that cache). Rows are
sorted by length so batches carry little padding.

With sliding-window attention (Mistral, Gemma 2/3) the custom mask replaces the model's windowed
masks too, which is exact only while no window cuts anything: a group whose longest input sequence
is at most ``sliding_window`` tokens long is packed (position ``p`` attends to keys ``p - W + 1 .. p``,
so a sequence of ``W`` tokens sees all of itself either way); a longer one is scored one choice per
row, with the model's own masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..architecture import loaded_text_config, uses_sliding_window
from ..decoder import cache_argument
from .distributed import ONE_PROCESS, Processes
from .encoding import EncodedGroup, common_prefix_length

__all__ = ["PackedBatch", "choice_scores", "pack_batch", "packing_window", "score_groups"]


def packing_window(model: Any) -> int | None:
    """The longest input sequence (tokens) for which the shared-context 4-D mask is exact on
    ``model``: its sliding window, or None where no layer has one (any length)."""
    cfg = loaded_text_config(model.config)
    if not uses_sliding_window(cfg):
        return None
    return int(getattr(cfg, "sliding_window", None) or 0)  # sliding layers without a stated window: nothing packs


def _longest_input(g: EncodedGroup) -> int:
    return len(g.prefix) + max(len(t) for t in g.tails) - 1


_MIN_SHARED_PREFIX = 32  # tokens; below this a cached task-wide prefix is not worth a forward pass


def _row_length(g: EncodedGroup) -> int:
    # the last token of a sequence is only ever a target, never an input
    return len(g.prefix) + sum(max(0, len(t) - 1) for t in g.tails)


def _task_prefix_length(groups: list[EncodedGroup]) -> int:
    """Tokens every group starts with (MMLU's subject line and five examples), kept one short of the
    shortest prefix so every group still feeds the token that predicts its first target."""
    if len(groups) < 2:
        return 0
    n = min(common_prefix_length([g.prefix for g in groups]), min(len(g.prefix) for g in groups) - 1)
    return n if n >= _MIN_SHARED_PREFIX else 0


def _batches(groups: list[EncodedGroup], batch_size: int) -> list[list[EncodedGroup]]:
    """Groups sorted longest first, cut into batches of at most ``batch_size`` choices."""
    order = sorted(groups, key=lambda g: -_row_length(g))
    batches, current, n = [], [], 0
    for g in order:
        if current and n + len(g.tails) > batch_size:
            batches.append(current)
            current, n = [], 0
        current.append(g)
        n += len(g.tails)
    if current:
        batches.append(current)
    return batches


@dataclass
class PackedBatch:
    """One batch's forward inputs and what is scored from its outputs.

    Attributes:
        inputs: ``input_ids`` (B, L), ``position_ids`` (B, L) and, where a row holds two or more
            branches, the 4-D ``attention_mask`` (B, 1, L, C + L) (0 allowed, dtype min masked).
        keep: the sorted positions any row predicts from (``logits_to_keep``).
        rows, cols, targets: ``(N,)``: target ``targets[t]`` is predicted at ``(rows[t], cols[t])``.
        spans: per choice, in batch order group by group, its slice of the scored tokens.
    """

    inputs: dict[str, Any]
    keep: Any
    rows: Any
    cols: Any
    targets: Any
    spans: list[tuple[int, int]]


def pack_batch(batch: list[EncodedGroup], dtype: Any, C: int = 0) -> PackedBatch:
    """The tensors of one batch (on the cpu): every group's prefix, then each choice's branch.

    Args:
        dtype: the model's dtype (the 4-D mask's).
        C: the first C tokens of every group are already in a cache, so rows start at token C.
    """
    import torch

    B, L = len(batch), max(_row_length(g) for g in batch) - C
    ids = torch.zeros(B, L, dtype=torch.long)
    pos = torch.zeros(B, L, dtype=torch.long)
    seg = torch.full((B, L), -1, dtype=torch.long)
    rows, preds, targets = [], [], []  # one entry per scored token
    spans: list[tuple[int, int]] = []  # per choice: its slice of the scored tokens
    need_mask = False  # a 4-D mask is needed only where a row holds two or more branches
    for b, g in enumerate(batch):
        P = len(g.prefix)
        ids[b, :P - C] = torch.tensor(g.prefix[C:])
        pos[b, :P - C] = torch.arange(C, P)
        seg[b, :P - C] = 0
        start, branches = P - C, 0
        for i, (tail, n) in enumerate(zip(g.tails, g.n_targets)):
            inputs = tail[:-1]
            k = len(inputs)
            if k:
                ids[b, start:start + k] = torch.tensor(inputs)
                pos[b, start:start + k] = torch.arange(P, P + k)
                seg[b, start:start + k] = i + 1
                branches += 1
            T = P + len(tail)  # choice i's whole sequence S = prefix + tail; targets S[T-n:T]
            # S[j] is predicted at S-index j-1: in the prefix, or in this choice's branch
            at = [j - 1 - C if j - 1 < P else start + (j - 1 - P) for j in range(T - n, T)]
            spans.append((len(preds), len(preds) + n))
            rows += [b] * n
            preds += at
            targets += tail[len(tail) - n:]
            start += k
        need_mask |= branches > 1
    inputs: dict[str, Any] = {"input_ids": ids, "position_ids": pos}
    if need_mask:
        q, k = seg.unsqueeze(2), seg.unsqueeze(1)  # (B, L, 1), (B, 1, L)
        causal = torch.ones(L, L, dtype=torch.bool).tril()
        allowed = causal & ((k == 0) | (k == q))  # (B, L, L); padding (-1) only sees the prefix and padding
        allowed = torch.cat([torch.ones(B, L, C, dtype=torch.bool), allowed], dim=2)  # (B, L, C + L): all see the cache
        inputs["attention_mask"] = torch.zeros(B, 1, L, C + L, dtype=dtype).masked_fill(~allowed.unsqueeze(1), torch.finfo(dtype).min)
    # else every row is one causal sequence, right-padded: no mask at all, as the harness runs them;
    # padding follows every real token, so causal attention alone keeps it out, and the model's
    # attention takes its causal fast path (a padding mask would force a materialised one)
    return PackedBatch(inputs, torch.tensor(sorted(set(preds)), dtype=torch.long), torch.tensor(rows, dtype=torch.long),
                       torch.tensor(preds, dtype=torch.long), torch.tensor(targets, dtype=torch.long), spans)


def choice_scores(picked: Any, packed: PackedBatch) -> list[tuple[float, bool]]:
    """Log-likelihood and greedy flag of every choice of a batch from the logits ``picked`` (N, V)
    at its scored positions, in batch order."""
    import torch

    picked = picked.to(torch.promote_types(picked.dtype, torch.float32))
    tgt = packed.targets.to(picked.device)
    logp = picked.log_softmax(-1).gather(1, tgt[:, None]).squeeze(1)  # (N,)
    greedy = picked.argmax(-1) == tgt
    logp, greedy = logp.cpu(), greedy.cpu()
    # Summed in float32, as the harness sums: at |ll| ~ 1000 a float32 ulp is 6e-5, so a float64 sum
    # would differ from the harness's by more than the rounding of any single token's log-probability.
    return [(float(logp[a:z].sum()), bool(greedy[a:z].all())) for a, z in packed.spans]


def _forward_batch(model: Any, batch: list[EncodedGroup], shared: tuple[int, Any] = (0, None)) -> list[tuple[float, bool]]:
    """Score every choice of ``batch``; results in batch order, group by group.

    Args:
        shared: (C, cache): the first C tokens of every group are already in ``cache`` (a
            transformers cache of batch size 1), so rows start at token C.
    """
    import copy

    import torch

    C, cache = shared
    param = next(model.parameters())
    packed = pack_batch(batch, param.dtype, C)
    kwargs = {k: v.to(param.device) for k, v in packed.inputs.items()}
    if cache is not None:
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(batch))
        kwargs[cache_argument(model)] = past
    keep = packed.keep.to(param.device)
    logits = model(**kwargs, logits_to_keep=keep).logits  # (B, K, V)
    col = torch.searchsorted(keep, packed.cols.to(param.device))
    return choice_scores(logits[packed.rows.to(param.device), col], packed)  # (N, V) picked


def _layerwise_scores(target: Any, batches: list[list[EncodedGroup]], progress: bool) -> list[list[tuple[float, bool]]]:
    """:func:`_forward_batch` of every batch, the model run layer by layer: the same tensors (no
    task-wide prefix cache), and the last states through the final norm and output layer at the
    scored positions only."""
    from ..output_layer import chunk_logits

    norm, head = target.scoring()
    lw = target.lw
    packed = [pack_batch(batch, lw.dtype) for batch in batches]

    def scores(b: int, hidden: Any) -> list[tuple[float, bool]]:
        p = packed[b]
        rows = norm(hidden)[p.rows.to(lw.device), p.cols.to(lw.device)]  # (N, d)
        return choice_scores(chunk_logits(rows, head.weight, head.bias), p)

    return target.finals([p.inputs for p in packed], scores, progress=progress)


def _runs(groups: list[EncodedGroup], shared: bool, window: int | None) -> list[tuple[list[EncodedGroup], bool]]:
    """The groups in runs batched apart, each with whether its rows may pack (a 4-D mask, a
    task-wide cached prefix): all packed without a window; on a sliding-window model the groups that
    fit it packed, the others a choice per row in batches of their own (a batch with a packed row
    gives every row the custom mask, which would bypass the window); unshared, a choice per row."""
    if not shared:
        return [([one for g in groups for one in g.split()], False)]
    if window is None:
        return [(groups, True)]
    fit = [g for g in groups if _longest_input(g) <= window]
    long = [one for g in groups if _longest_input(g) > window for one in g.split()]
    return [(run, packed) for run, packed in ((fit, True), (long, False)) if run]


def score_groups(model: Any, groups: list[EncodedGroup], batch_size: int = 32, progress: bool = True,
                 desc: str = "scoring", shared: bool = True,
                 processes: Processes = ONE_PROCESS) -> dict[tuple[int, int], tuple[float, bool]]:
    """Sum of log-probabilities (nats) and greedy flag of every continuation.

    Args:
        model: a causal LM (eval mode) accepting ``logits_to_keep``, or one run layer by layer
            (:class:`~downcycle.evaluation.layerwise_target.LayerwiseTarget` or a ``LayerwiseModel``).
        groups: encoded requests (:meth:`Encoder.groups`).
        batch_size: choices (continuations) per forward pass (the harness's unit).
        shared: pack each group's choices after their shared prefix (on a sliding-window model,
            the groups that fit inside the window); False scores each choice in its own row.
        processes: with several, each runs its share of the batches (:mod:`.distributed`) and every
            one returns all the scores.

    Returns:
        (document index, choice index) -> (log-likelihood, whether every token is the argmax).
    """
    import torch
    from ..progress import progress_bar
    from .layerwise_target import as_target

    target = as_target(model)
    runs = _runs(groups, shared, packing_window(target.model if target is not None else model))
    total = sum(len(g.tails) for g in groups)

    def run() -> dict[tuple[int, int], tuple[float, bool]]:
        out: dict[tuple[int, int], tuple[float, bool]] = {}
        k = 0  # batches counted across runs: the same numbering in every process
        for part, packed in runs:
            C, cache = _task_prefix_length(part) if packed and target is None else 0, None
            if C:  # the prefix all groups share runs once; its keys/values serve every batch
                device = next(model.parameters()).device
                result = model(input_ids=torch.tensor([part[0].prefix[:C]], device=device), use_cache=True)
                cache = getattr(result, "cache", None) or result.past_key_values
            batches = _batches(part, batch_size)
            every = _layerwise_scores(target, batches, progress) if target is not None else None  # one process only
            for j, batch in enumerate(batches):
                if every is not None or processes.mine(k):  # the same batches as one process, every N-th of them here
                    scores = iter(every[j] if every is not None else _forward_batch(model, batch, (C, cache)))
                    for g in batch:
                        for slot in g.slots:
                            out[slot] = next(scores)
                k += 1
                bar.update(sum(len(g.tails) for g in batch))  # with several processes: as if all kept this one's pace
        return out

    with torch.inference_mode(), progress_bar(total=total, desc=desc, unit="choice", disable=not progress, leave=False) as bar:
        return processes.merge(run)
