"""Turning a growing list of token ids into text pieces that can be printed as they arrive.

A token is not a unit of text: byte-level BPE splits a multi-byte UTF-8 character (``é``, ``世``,
an emoji) across tokens, and SentencePiece-style decoders change how a token reads depending on
what precedes it (a leading space is dropped at the start). Decoding each token alone therefore
prints broken characters and wrong spaces. Instead the whole list is decoded again at every step
and only the new suffix is emitted. While the text ends in U+FFFD (the replacement character that
decoders put for an incomplete UTF-8 sequence) that run is held back, because the next token may
complete the character; :meth:`IncrementalDecoder.flush` emits whatever is left at the end (a
replacement character the model really produced included), so the pieces always join to
``tokenizer.decode(tokens)``.

Decoding the whole list costs O(n) per token in the tokenizer's Rust code, microseconds for the
lengths one prints, next to a forward pass of the model.
"""

from __future__ import annotations

from typing import Any

__all__ = ["REPLACEMENT_CHARACTER", "IncrementalDecoder"]

REPLACEMENT_CHARACTER = "\ufffd"


class IncrementalDecoder:
    """Feed token ids one at a time; get back the text each one makes stable.

    Args:
        tokenizer: a ``transformers`` tokenizer (anything with ``decode(ids, skip_special_tokens=)``).
        skip_special_tokens: leave special tokens (EOS, chat markers) out of the text, as
            ``generate``'s users usually decode.

    Example::

        dec = IncrementalDecoder(tokenizer)
        pieces = [dec.push(t) for t in ids] + [dec.flush()]
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.tokens: list[int] = []
        self.emitted = 0  # characters of the decoded text already handed out

    def _decode(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=self.skip_special_tokens)

    def _emit(self, text: str) -> str:
        piece = text[self.emitted:]
        self.emitted = max(self.emitted, len(text))
        return piece

    def push(self, token: int) -> str:
        """Add one token; return the newly stable text ('' while a character is incomplete)."""
        self.tokens.append(int(token))
        text = self._decode()
        # Hold back a trailing run of replacement characters: it may be a character whose
        # remaining bytes are still to come.
        return self._emit(text.rstrip(REPLACEMENT_CHARACTER))

    def flush(self) -> str:
        """The text held back so far (call once, after the last token)."""
        return self._emit(self._decode())

    @property
    def text(self) -> str:
        """The full decoded text of every token pushed so far."""
        return self._decode()
