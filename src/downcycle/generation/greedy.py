"""Batched greedy generation with stop sequences, as lm-evaluation-harness's HF backend generates
for ``generate_until`` requests, with every sequence stopping on its own.

Prompts are sorted longest first and cut into batches; a batch is left-padded (positions count
real tokens only, as ``transformers``' ``generate`` counts them), the prompt runs once, and then
one token per step is fed with the KV cache. A sequence ends at the model's EOS token, after
``max_new_tokens`` tokens, or as soon as its decoded text contains a stop sequence; finished
sequences leave the batch (their rows are dropped from the cache), so a batch costs what its
longest-running sequence needs, not ``max_new_tokens`` for everyone.

The result of a sequence is the harness's: the generated tokens (EOS excluded) decoded with special
tokens skipped, cut before the first occurrence of any stop sequence. The harness's own loop keeps
every row going until all rows of its batch have produced the same stop sequence; the text before
the first stop sequence is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..decoder import cache_argument
from ..loading import eos_token_ids

__all__ = ["Generation", "cut_at_stops", "eos_token_ids", "greedy_generate"]


@dataclass
class Generation:
    """One prompt's greedy continuation.

    Attributes:
        text: the continuation cut before the first stop sequence.
        tokens: the generated token ids (EOS excluded; may run past the stop sequence by the
            tokens that completed it).
        stop: why it ended: ``"stop"`` (a stop sequence), ``"eos"`` or ``"length"``.
    """

    text: str
    tokens: list[int]
    stop: str


def cut_at_stops(text: str, until: tuple[str, ...] | list[str]) -> str:
    """``text`` up to the first occurrence of any (non-empty) stop sequence."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def greedy_generate(model: Any, tokenizer: Any, prompts: list[list[int]], *, until: tuple[str, ...] | list[str],
                    max_new_tokens: int, eos_ids: set[int] | None = None, batch_size: int = 32,
                    progress: bool = False, desc: str = "generating",
                    mine: Callable[[int], bool] | None = None) -> list[Generation | None]:
    """Greedy continuations of token-id prompts.

    Args:
        model: a causal LM in eval mode.
        tokenizer: decodes the continuations (stop sequences are matched in decoded text).
        prompts: token ids of each prompt (already truncated to fit ``max_new_tokens`` more).
        until: stop sequences.
        max_new_tokens: new tokens per prompt at most.
        eos_ids: token ids that end a sequence (default :func:`eos_token_ids`).
        batch_size: prompts per batch.
        mine: which batches (numbered from 0, longest prompts first) to run, for one of several
            processes that share them out; default all.

    Returns:
        One :class:`Generation` per prompt, in input order (None for a prompt of a batch not run).
    """
    import torch

    from ..progress import progress_bar

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    eos = eos_token_ids(model, tokenizer) if eos_ids is None else set(eos_ids)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[Generation | None] = [None] * len(prompts)
    with torch.inference_mode(), progress_bar(total=len(prompts), desc=desc, unit="seq", disable=not progress, leave=False) as bar:
        for k, start in enumerate(range(0, len(order), batch_size)):
            chunk = order[start:start + batch_size]
            if mine is None or mine(k):
                for i, g in zip(chunk, _generate_batch(model, tokenizer, [prompts[i] for i in chunk], until, max_new_tokens, eos)):
                    out[i] = g
            bar.update(len(chunk))
    return out


def _generate_batch(model: Any, tokenizer: Any, prompts: list[list[int]], until, max_new_tokens: int,
                    eos: set[int]) -> list[Generation]:
    import torch

    device = next(model.parameters()).device
    B, L = len(prompts), max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((B, L), pad, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.long)
    for b, p in enumerate(prompts):  # left padding: every prompt ends at column L - 1
        ids[b, L - len(p):] = torch.tensor(p)
        mask[b, L - len(p):] = 1
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # (B, L): as generate() derives them
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    cache_arg = cache_argument(model)
    result = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache = result.past_key_values if getattr(result, "cache", None) is None else result.cache
    nxt = result.logits[:, -1].argmax(-1)  # (B,)
    pos = pos[:, -1]  # (B,) position of each row's last token
    rows = list(range(B))  # batch row -> prompt index, for the rows still generating
    tokens: list[list[int]] = [[] for _ in prompts]
    done: list[Generation | None] = [None] * B
    for step in range(max_new_tokens):
        keep = []  # batch rows still generating
        for k, (r, token) in enumerate(zip(rows, nxt.tolist())):
            if token in eos:
                done[r] = Generation(cut_at_stops(tokenizer.decode(tokens[r], skip_special_tokens=True), until), tokens[r], "eos")
                continue
            tokens[r].append(token)
            text = tokenizer.decode(tokens[r], skip_special_tokens=True)
            if any(s and s in text for s in until):
                done[r] = Generation(cut_at_stops(text, until), tokens[r], "stop")
            elif step == max_new_tokens - 1:
                done[r] = Generation(text, tokens[r], "length")
            else:
                keep.append(k)
        if not keep:
            break
        if len(keep) < len(rows):  # finished rows leave the batch and the cache
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, pos, nxt = mask[index], pos[index], nxt[index]
            rows = [rows[k] for k in keep]
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype, device=device)], dim=1)
        pos = pos + 1
        result = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos[:, None], use_cache=True,
                       **{cache_arg: cache})
        cache = result.past_key_values if getattr(result, "cache", None) is None else result.cache
        nxt = result.logits[:, -1].argmax(-1)
    return done  # type: ignore[return-value]
