"""The continuation of one prompt through ``transformers``' ``generate``, as tokens or as printable text.

:func:`generate_tokens` returns the new token ids. :class:`TextStream` runs ``generate`` in a worker
thread with a ``TextIteratorStreamer``, which decodes the growing token list and releases text only
once it is stable (a character split across byte-level BPE tokens, U+FFFD while incomplete, waits
for the token that completes it), and yields those pieces as they come. What the streamer lacks,
this adds: the generated ids and why generation stopped once it is over, and an exception raised
inside ``generate`` re-raised in the caller instead of leaving the iterator waiting forever.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from .sampling import SamplingParams, generate_kwargs

__all__ = ["TextStream", "generate_tokens", "text_streamer"]


def _inputs(model: Any, prompt_ids: list[int]) -> dict[str, Any]:
    import torch

    if not prompt_ids:
        raise ValueError("prompt_ids must not be empty")
    ids = torch.tensor([prompt_ids], device=next(model.parameters()).device)  # (1, P)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def generate_tokens(model: Any, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int,
                    eos_ids: set[int] | frozenset[int] = frozenset(), pad_token_id: int | None = None) -> list[int]:
    """The continuation of ``prompt_ids``: ``model.generate``'s new tokens (an EOS token included as
    the last one when it stopped there).

    Args:
        model: a causal LM in eval mode (its device is that of its first parameter).
        prompt_ids: the prompt's token ids (non-empty), e.g. with BOS.
        params: how each token is chosen; sampling draws from the global torch RNG, so seed it with
            ``torch.manual_seed`` for a reproducible run.
        max_new_tokens: tokens to produce at most (>= 1).
        eos_ids: token ids that end the sequence (empty: always ``max_new_tokens`` tokens).
    """
    import torch

    inputs = _inputs(model, prompt_ids)
    with torch.inference_mode():
        out = model.generate(**inputs, **generate_kwargs(params, max_new_tokens, eos_ids, pad_token_id))  # (1, P + n)
    return out[0, len(prompt_ids):].tolist()


def text_streamer(tokenizer: Any) -> Any:
    """The streamer :class:`TextStream` decodes with: new tokens only, special tokens skipped."""
    from transformers import TextIteratorStreamer

    return TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


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
        streamer = text_streamer(self.tokenizer)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        kwargs = {**_inputs(self.model, self.prompt_ids), **generate_kwargs(self.params, self.max_new_tokens, self.eos_ids, pad)}
        result: dict[str, Any] = {}

        def work() -> None:
            import torch

            try:
                with torch.inference_mode():  # in this thread only: the caller's code never runs under it
                    result["ids"] = self.model.generate(**kwargs, streamer=streamer)  # (1, P + n)
            except BaseException as e:  # noqa: BLE001 -- handed to the caller, below
                result["error"] = e
                streamer.end()  # lets the iteration below finish

        worker = threading.Thread(target=work, name="downcycle-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    self.text += piece
                    yield piece
        finally:
            worker.join()
        if "error" in result:
            raise result["error"]
        self.tokens = result["ids"][0, len(self.prompt_ids):].tolist()
        self.stop = "eos" if self.tokens and self.tokens[-1] in self.eos_ids else "length"
