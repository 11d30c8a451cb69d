"""The decoding loop: the prompt runs once, then one token per step through the KV cache.

:func:`generate_tokens` yields token ids as they are chosen; :class:`TextStream` turns them into
printable text pieces (:mod:`.detokenize`) and records what happened. The cache is the one the
model returns (a ``transformers`` ``DynamicCache``, grown in place by each forward pass), passed
back as is: nothing is copied per step, and the prompt never runs again.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from .detokenize import IncrementalDecoder
from .sampling import RepetitionTracker, SamplingParams, choose_token

__all__ = ["TextStream", "generate_tokens"]


def _accepts(model: Any, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def generate_tokens(model: Any, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int,
                    eos_ids: set[int] | frozenset[int] = frozenset()) -> Iterator[int]:
    """Yield the continuation of ``prompt_ids`` token by token, as ``model.generate`` would produce it.

    Args:
        model: a causal LM in eval mode (its device is that of its first parameter).
        prompt_ids: the prompt's token ids (non-empty), e.g. with BOS.
        params: how each token is chosen (:func:`.sampling.choose_token`); sampling draws from the
            global torch RNG, so seed it with ``torch.manual_seed`` for a reproducible run.
        max_new_tokens: tokens to produce at most (>= 1).
        eos_ids: token ids that end the sequence; an EOS token is yielded, then the loop stops
            (as ``generate`` returns it as the last token).

    Yields:
        Token ids (int), one per forward pass.
    """
    import torch

    if not prompt_ids:
        raise ValueError("prompt_ids must not be empty")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    device = next(model.parameters()).device
    cache_arg = "cache" if _accepts(model, "cache") else "past_key_values"  # renamed in transformers 5
    prefill = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}  # the head runs on the last position only
    # inference_mode is entered around each step, never across a `yield`: a suspended generator
    # must not leave the caller's code running in inference mode.
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True, **prefill)
        logits = out.logits[:, -1]  # (1, V)
        repetition = None
        if params.repetition_penalty != 1.0:
            repetition = RepetitionTracker(logits.size(-1), params.repetition_penalty, device=logits.device)
            repetition.add(prompt_ids)  # transformers penalizes the prompt's tokens too
        token = choose_token(logits, params, repetition)  # (1,)
    for step in range(max_new_tokens):
        value = int(token)
        yield value
        if value in eos_ids or step == max_new_tokens - 1:
            return
        with torch.inference_mode():
            cache = out.past_key_values if getattr(out, "cache", None) is None else out.cache
            out = model(input_ids=token[:, None], use_cache=True, **{cache_arg: cache})  # (1, 1): the new token only
            if repetition is not None:
                repetition.add(value)
            token = choose_token(out.logits[:, -1], params, repetition)


class TextStream:
    """Generated text as printable pieces, and afterwards the tokens and why generation stopped.

    Args:
        model, prompt_ids, params, max_new_tokens, eos_ids: as for :func:`generate_tokens`.
        tokenizer: decodes the generated tokens (special tokens skipped).

    Iterating yields non-empty text pieces as tokens are produced; their concatenation is
    ``tokenizer.decode(tokens, skip_special_tokens=True)``. After iteration ``tokens`` holds the
    generated ids (EOS included when it stopped there, as ``generate`` returns it), ``stop`` is
    ``"eos"`` or ``"length"``, and ``text`` the whole continuation.
    """

    def __init__(self, model: Any, tokenizer: Any, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int,
                 eos_ids: set[int] | frozenset[int] = frozenset()) -> None:
        self.model, self.tokenizer, self.prompt_ids = model, tokenizer, list(prompt_ids)
        self.params, self.max_new_tokens, self.eos_ids = params, max_new_tokens, set(eos_ids)
        self.tokens: list[int] = []
        self.stop: str | None = None
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        decoder = IncrementalDecoder(self.tokenizer, skip_special_tokens=True)
        for token in generate_tokens(self.model, self.prompt_ids, self.params, self.max_new_tokens, self.eos_ids):
            self.tokens.append(token)
            piece = decoder.push(token)
            if piece:
                self.text += piece
                yield piece
        tail = decoder.flush()
        if tail:
            self.text += tail
            yield tail
        self.stop = "eos" if self.tokens and self.tokens[-1] in self.eos_ids else "length"
