"""The model's own fast tokenizer, driven in batches on all cores.

We call the Rust tokenizer (``tokenizers.Tokenizer.encode_batch_fast``) directly: it encodes a batch
in parallel (rayon, all cores unless ``TOKENIZERS_PARALLELISM=false``) and releases the GIL, and it
skips the offset bookkeeping that ``transformers``' ``__call__`` pays for. Special tokens are added
by us, not by the tokenizer's post-processor: BOS where the model's tokenizer would add one, and an
EOS after every document, so packed documents are always separated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DowncycleError

__all__ = ["TokenizerInfo", "encode_documents", "load_fast_tokenizer", "token_dtype"]


@dataclass
class TokenizerInfo:
    """What the corpus records about its tokenizer."""

    source: str
    sha256: str | None  # of tokenizer.json, when the tokenizer has one
    vocab_size: int  # len(tokenizer): base vocabulary plus added tokens
    bos_token_id: int | None  # prepended to every document when the model's tokenizer adds BOS
    eos_token_id: int
    vocab_sha256: str | None = None  # of the vocabulary alone (downcycle.compat.vocab_fingerprint)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "vocab_sha256": self.vocab_sha256}


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab < 65536), uint32 otherwise; always little-endian."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def _tokenizer_hashes(tok: Any, directory: Path | None) -> tuple[str, str]:
    """sha256 of ``tokenizer.json`` and of its vocabulary alone (see :mod:`downcycle.compat`)."""
    import json

    from ..compat import vocab_fingerprint

    if directory is not None and (directory / "tokenizer.json").is_file():
        raw = (directory / "tokenizer.json").read_bytes()
    else:  # no file to hash (e.g. converted from a slow tokenizer): hash its canonical serialisation
        raw = tok.backend_tokenizer.to_str().encode()
    try:
        vocab = vocab_fingerprint(json.loads(raw))[0]
    except (ValueError, AttributeError):
        vocab = vocab_fingerprint(json.loads(tok.backend_tokenizer.to_str()))[0]
    return hashlib.sha256(raw).hexdigest(), vocab


def load_fast_tokenizer(name: str, *, trust_remote_code: bool = False) -> tuple[Any, TokenizerInfo]:
    """Load the fast tokenizer of a model or tokenizer directory (or hub id when online).

    Returns:
        ``(backend, info)``: the ``tokenizers.Tokenizer`` that does the encoding, and its
        :class:`TokenizerInfo`.

    Raises:
        DowncycleError: not found, not loadable, not a fast tokenizer, or without an EOS token.
    """
    from ..loading import load_tokenizer, resolve_source

    directory = resolve_source(name)
    try:  # AutoTokenizer's fast tokenizer where there is one (use_fast is its default; transformers 5 ignores it)
        tok = load_tokenizer(directory, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 -- an unloadable tokenizer is the user's input, reported in one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DowncycleError(f"{name}: no loadable tokenizer ({reason})") from None
    if not getattr(tok, "is_fast", False):
        raise DowncycleError(f"{name}: only a slow tokenizer is available; downcycle data needs a fast (tokenizers) one")
    eos = tok.eos_token_id
    if eos is None:
        raise DowncycleError(f"{name}: the tokenizer has no eos_token; set one in tokenizer_config.json")
    # Does the model expect BOS? Ask the tokenizer itself: encode a probe with special tokens.
    probe = tok("a", add_special_tokens=True)["input_ids"]
    bos = tok.bos_token_id if tok.bos_token_id is not None and probe[:1] == [tok.bos_token_id] else None
    sha, vocab_sha = _tokenizer_hashes(tok, directory)
    info = TokenizerInfo(source=str(name), sha256=sha, vocab_size=len(tok), bos_token_id=bos, eos_token_id=eos,
                         vocab_sha256=vocab_sha)
    return tok.backend_tokenizer, info


def encode_documents(backend: Any, info: TokenizerInfo, texts: list[str], dtype: np.dtype) -> list[np.ndarray]:
    """Token ids of each document, ``[BOS] + ids + [EOS]``, as 1-D arrays of ``dtype``.

    Args:
        backend: a ``tokenizers.Tokenizer``.
        texts: one batch of documents; encoded in parallel on all cores.

    Returns:
        one array per document, shape ``(n_tokens,)``.
    """
    # encode_batch_fast (tokenizers >= 0.21) skips computing character offsets we would not use
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    encodings = encode(texts, add_special_tokens=False)
    head = [info.bos_token_id] if info.bos_token_id is not None else []
    tail = [info.eos_token_id]
    return [np.array(head + e.ids + tail, dtype=dtype) for e in encodings]


def encode_stream(backend: Any, info: TokenizerInfo, batches: Iterable[list[str]], dtype: np.dtype) -> Iterator[list[np.ndarray]]:
    """:func:`encode_documents` over a stream of batches."""
    for batch in batches:
        yield encode_documents(backend, info, batch, dtype)
