"""The ``loss`` task: held-out NLL, perplexity and bits per byte on raw text or a corpus's val split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from .perplexity import LossTotals, document_nll
from .results import MetricValue, TaskResult

__all__ = ["evaluate_loss"]


def evaluate_loss(model: Any, tokenizer: Any, source: str | None, *, text_field: str, window: int, stride: int,
                  limit: int | None, progress: bool, version: str) -> TaskResult:
    """NLL per token, perplexity and bits per byte of ``model`` on ``source``.

    Args:
        source: raw text (anything :func:`downcycle.data.sources.iter_texts` reads) or a corpus
            directory written by ``downcycle data`` (its ``val`` split; each packed sequence is
            scored on its own, its first token as context, and its bytes counted by decoding).
        window, stride: see :func:`downcycle.evaluation.perplexity.document_nll`.
        limit: at most this many documents (sequences for a corpus).
    """
    from ..progress import progress_bar

    if source is None:
        raise DowncycleError("task loss needs --data (held-out text or a corpus directory)")
    totals = LossTotals()
    if (Path(source) / "corpus.json").is_file():
        from ..data.loader import PackedDataset

        ds = PackedDataset(source, split="val")
        n = len(ds) if limit is None else min(limit, len(ds))
        for i in progress_bar(range(n), desc="loss", unit="seq", disable=not progress, leave=False):
            ids = ds[i]["input_ids"].tolist()
            nbytes = len(tokenizer.decode(ids[1:]).encode("utf-8"))
            w = min(window, len(ids))
            totals.add(document_nll(model, ids, w, min(stride, w)), len(ids) - 1, nbytes)
    else:
        from ..data.sources import iter_texts

        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise DowncycleError("task loss: the tokenizer has neither a BOS nor an EOS token to start documents with")
        for text in progress_bar(iter_texts(source, text_field=text_field, limit_docs=limit), desc="loss", unit="doc",
                         disable=not progress, leave=False):
            ids = [prefix] + tokenizer.encode(text, add_special_tokens=False)
            if len(ids) < 2:
                continue
            totals.add(document_nll(model, ids, window, stride), len(ids) - 1, len(text.encode("utf-8")))
    if not totals.tokens:
        raise DowncycleError(f"{source}: no tokens to score")
    metrics = {k: MetricValue(v) for k, v in totals.metrics().items()}
    metrics["tokens"] = MetricValue(float(totals.tokens))
    metrics["bytes"] = MetricValue(float(totals.bytes))
    return TaskResult(version, "loss", 0, limit, totals.documents, metrics)
