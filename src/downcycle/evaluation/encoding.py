"""Turning (context, continuation) strings into the token ids the evaluation harness scores.

The harness (lm-evaluation-harness 0.4.x, ``TemplateLM._encode_pair``) moves trailing whitespace of
the context onto the continuation, encodes ``context + continuation`` whole and the context alone,
and takes as continuation tokens the whole encoding past the context encoding's length; the context
tokens are the context's own encoding. Encoding uses the tokenizer's default special tokens (so a
Llama tokenizer prepends BOS, a GPT-2 one does not) unless the text already starts with the BOS
string; an empty context becomes the prefix token (BOS, else EOS). Here the context encoding is
computed once per distinct context, not once per choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .tasks.spec import Request

__all__ = ["EncodedGroup", "Encoder"]


@dataclass
class EncodedGroup:
    """The token sequences of one document's choices, as a shared prefix and one tail per choice.

    Choice ``i`` scores the sequence ``S_i = prefix + tails[i]`` whose last ``n_targets[i]`` tokens
    are its continuation; the prefix (at least one token) is the longest token prefix common to all
    the choices' contexts, so for most tasks it is the whole context and each tail is just the
    continuation, and for Winogrande it is the sentence up to the blank.

    Attributes:
        prefix: shared leading token ids.
        tails: per choice, the rest of its sequence (context remainder + continuation).
        n_targets: per choice, how many trailing tokens of its tail are scored.
        slots: per choice, its (document index, choice index) in the results.
    """

    prefix: list[int]
    tails: list[list[int]]
    n_targets: list[int]
    slots: list[tuple[int, int]]

    def split(self) -> list[EncodedGroup]:
        """One group per choice (for models that cannot take the packed mask)."""
        return [EncodedGroup(self.prefix, [t], [n], [s]) for t, n, s in zip(self.tails, self.n_targets, self.slots)]


def common_prefix_length(seqs: list[list[int]]) -> int:
    """Length of the longest token prefix all ``seqs`` share."""
    n = min(map(len, seqs))
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs[1:]):
            return i
    return n


class Encoder:
    """Harness-identical encoding with a per-context cache.

    Args:
        tokenizer: a Hugging Face tokenizer.
        max_length: the model's maximum sequence length; longer inputs are left-truncated as the
            harness truncates them (``(context + continuation)[-(max_length + 1):][:-1]``).
        add_bos: None keeps the tokenizer's default special tokens; True/False forces them.
    """

    def __init__(self, tokenizer: Any, max_length: int, add_bos: bool | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.add_bos = add_bos
        bos = tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else tokenizer.eos_token_id
        self._bos_text = tokenizer.decode(self.prefix_token_id) if self.prefix_token_id is not None else None
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        kwargs = {} if self.add_bos is None else {"add_special_tokens": self.add_bos}
        if self.add_bos is None and self._bos_text and text.startswith(self._bos_text):
            kwargs = {"add_special_tokens": False}
        return self.tokenizer.encode(text, **kwargs)

    def _context_ids(self, context: str) -> list[int]:
        ids = self._cache.get(context)
        if ids is None:
            ids = self._cache[context] = self.encode(context)
        return ids

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) for one request, exactly as the harness computes them."""
        if context == "":
            cont = self.tokenizer.encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        stripped = context.rstrip()
        if len(stripped) < len(context):
            continuation = context[len(stripped):] + continuation
            context = stripped
        ctx = self._context_ids(context)
        whole = self.encode(context + continuation)
        return ctx, whole[len(ctx):]

    def groups(self, requests: list[Request], shared: bool = True) -> list[EncodedGroup]:
        """Encode documents' requests, one group per document (split per choice when ``shared`` is False).

        Args:
            requests: one per document.
            shared: False makes every choice its own group (no shared-prefix packing).
        """
        out: list[EncodedGroup] = []
        for d, req in enumerate(requests):
            seqs, ctx_lens, n_targets = [], [], []
            for context, continuation in zip(req.contexts, req.continuations):
                ctx, cont = self.pair(context, continuation)
                seq = ctx + cont
                if len(seq) > self.max_length + 1:  # harness: keep the last max_length + 1 tokens
                    seq = seq[-(self.max_length + 1):]
                seqs.append(seq)
                ctx_lens.append(len(seq) - len(cont))
                n_targets.append(len(cont))
            # share what all contexts have in common, never a scored token, and keep >= 1 token
            p = max(1, min(common_prefix_length(seqs), *ctx_lens)) if len(seqs) > 1 else ctx_lens[0]
            if any(s[:p] != seqs[0][:p] for s in seqs):  # contexts differ from the first token on
                groups = [EncodedGroup(s[:c], [s[c:]], [n], [(d, i)]) for i, (s, c, n) in enumerate(zip(seqs, ctx_lens, n_targets))]
            else:
                groups = [EncodedGroup(seqs[0][:p], [s[p:] for s in seqs], n_targets, [(d, i) for i in range(len(seqs))])]
            out += groups if shared else [g for group in groups for g in group.split()]
        return out
