"""Calibration batches for analysis: documents from any source, tokenized and packed.

Documents come from :func:`downcycle.corpus.sources.iter_texts` (local files, dataset directories, HF
ids), are tokenized one at a time, joined with the tokenizer's EOS token and cut into windows of
``seq_len`` tokens -- the same packed random-segment style of calibration set that ShortGPT, SLEB
and Gromov et al. draw from C4/WikiText. Windows are taken in source order (deterministic), so no
padding is ever needed and every token counts. Reading stops as soon as ``samples`` windows are full.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DowncycleError

__all__ = ["Calibration", "corpus_calibration", "load_calibration", "model_calibration", "pack_windows"]


@dataclass
class Calibration:
    """Packed calibration windows and where they came from."""

    input_ids: Any  # (N, S) LongTensor
    source: str
    documents: int
    tokens: int

    def provenance(self) -> dict[str, Any]:
        return {"source": self.source, "documents": self.documents, "samples": int(self.input_ids.shape[0]),
                "seq_len": int(self.input_ids.shape[1]), "tokens": self.tokens}


def pack_windows(token_lists: Iterable[list[int]], seq_len: int, samples: int, separator: int | None) -> tuple[Any, int]:
    """Concatenate token lists (``separator`` between documents) into ``samples`` windows of ``seq_len``.

    Returns:
        ``((N, seq_len) LongTensor, documents read)`` with ``N <= samples`` (fewer if the documents
        run out; a partial last window is dropped).
    """
    import torch

    need = seq_len * samples
    buf: list[int] = []
    docs = 0
    for tokens in token_lists:
        docs += 1
        if buf and separator is not None:
            buf.append(separator)
        buf.extend(tokens)
        if len(buf) >= need:
            break
    full = min(len(buf), need) // seq_len
    return torch.tensor(buf[: full * seq_len], dtype=torch.long).reshape(full, seq_len), docs


def load_calibration(source: str, tokenizer: Any, *, samples: int, seq_len: int, text_field: str = "text") -> Calibration:
    """Read ``source`` and pack it into ``samples`` windows of ``seq_len`` tokens.

    Raises:
        DowncycleError: if the source is unreadable or too short for even one window.
    """
    from .sources import iter_texts

    texts = iter_texts(source, text_field=text_field)
    ids, docs = pack_windows((tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts), seq_len, samples,
                             tokenizer.eos_token_id)
    if ids.shape[0] == 0:
        raise DowncycleError(f"{source}: too little text for one calibration window of {seq_len} tokens (lower --seq-len)")
    return Calibration(ids, source, docs, int(ids.numel()))


def corpus_calibration(corpus: Path, samples: int) -> Calibration:
    """The first ``samples`` train sequences of a corpus written by ``downcycle data`` (its own length):
    already tokenized and packed, so the windows are exactly what training on that corpus reads."""
    import torch

    from .loader import PackedDataset

    ds = PackedDataset(corpus, split="train")
    n = min(samples, len(ds))
    if n == 0:
        raise DowncycleError(f"{corpus}: no train sequences for calibration")
    ids = torch.stack([ds[i]["input_ids"] for i in range(n)])
    return Calibration(ids, str(corpus), n, int(ids.numel()))


def model_calibration(src: Path, data: str, *, samples: int, seq_len: int, text_field: str = "text", tokenizer: str | None = None,
                      trust_remote_code: bool = False, corpus: bool = False) -> tuple[Calibration, str]:
    """The calibration windows of ``data`` for the model in ``src``, read with its tokenizer (or
    ``tokenizer``) before the model loads, and checked against its config.json and weights: the
    embedding rows the ids need, the positions the windows need. Returns the windows and the
    tokenizer's path.

    Raises:
        DowncycleError: missing or broken weights, no usable tokenizer, windows longer than the
            model's positions, ids beyond the embeddings.
    """
    from ..compat import check_positions, check_tokenizer, embedding_rows
    from ..loading import check_weights, load_tokenizer, read_config

    model_config = read_config(src)
    check_weights(src)
    check_positions("--seq-len", seq_len, src, model_config, "give --seq-len {limit} or less")
    tok_path = tokenizer or str(src)
    if tokenizer is not None:
        check_tokenizer(src, tokenizer)
    try:
        tok = load_tokenizer(tok_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise DowncycleError(f"{tok_path}: no usable tokenizer ({str(e).splitlines()[0] if str(e) else type(e).__name__}); pass --tokenizer") from None
    if corpus and (Path(data) / "corpus.json").is_file():  # healing: the recipe's own packed corpus
        calib = corpus_calibration(Path(data), samples)
    else:
        calib = load_calibration(data, tok, samples=samples, seq_len=seq_len, text_field=text_field)
    vocab = embedding_rows(model_config)
    if vocab is not None and int(calib.input_ids.max()) >= vocab:
        raise DowncycleError(f"{tok_path}: the tokenizer gives token id {int(calib.input_ids.max())}, but the model has only "
                             f"{vocab} embeddings (the wrong --tokenizer?)")
    return calib, tok_path
