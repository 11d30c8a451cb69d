"""The ``loss`` task: held-out NLL, perplexity and bits per byte on raw text or a corpus's val split, and
with a reference model the per-token KL(reference‖model) on the same tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from .distributed import ONE_PROCESS, Processes
from .perplexity import LossTotals, score_documents
from .results import MetricValue, TaskResult

__all__ = ["evaluate_loss"]


def evaluate_loss(model: Any, tokenizer: Any, source: str | None, *, text_field: str, window: int, stride: int,
                  limit: int | None, progress: bool, version: str, reference: Any = None, is_reference: bool = False,
                  processes: Processes = ONE_PROCESS) -> TaskResult:
    """NLL per token, perplexity and bits per byte of ``model`` on ``source``; with ``reference``, also
    ``kl_ref``: KL(reference‖model) summed over every scored token and divided by their number (the
    same tokens, windows and context as the NLL), its standard error over documents (sequences).

    Args:
        source: raw text (anything :func:`downcycle.corpus.sources.iter_texts` reads) or a corpus
            directory written by ``downcycle data`` (its ``val`` split; each packed sequence is
            scored on its own, its first token as context, and its bytes counted by decoding).
            Windows of many documents run batched (:func:`~downcycle.evaluation.perplexity.total_nll`).
        window, stride: see :func:`downcycle.evaluation.perplexity.document_nll`.
        limit: at most this many documents (sequences for a corpus).
        reference: a loaded causal LM with ``model``'s vocabulary (eval mode), or a reference run layer
            by layer for a ``model`` run so (:mod:`.layerwise_loss`), or None.
        is_reference: ``model`` is the reference itself: ``kl_ref`` is 0 (not computed unless
            ``reference`` is given: cuts run together score it all at once).
        processes: with several, each scores its share of the batches (:mod:`.distributed`); every
            process reads every document and returns the same result.
    """
    from ..progress import progress_bar

    if source is None:
        raise DowncycleError("task loss needs --data (held-out text or a corpus directory)")
    totals = LossTotals()
    if (Path(source) / "corpus.json").is_file():
        from ..corpus.loader import PackedDataset

        ds = PackedDataset(source, split="val")
        n = len(ds) if limit is None else min(limit, len(ds))
        window = min(window, ds.seq_len)
        stride = min(stride, window)

        def documents() -> Iterator[list[int]]:
            for i in range(n):
                ids = ds[i]["input_ids"].tolist()
                totals.add_document(len(ids) - 1, len(tokenizer.decode(ids[1:]).encode("utf-8")))
                yield ids

        bar = progress_bar(total=n * (ds.seq_len - 1), desc="loss", unit="tok", disable=not progress, leave=False)
    else:
        from ..corpus.sources import iter_texts

        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise DowncycleError("task loss: the tokenizer has neither a BOS nor an EOS token to start documents with")

        def documents() -> Iterator[list[int]]:
            for text in iter_texts(source, text_field=text_field, limit_docs=limit):
                ids = [prefix] + tokenizer.encode(text, add_special_tokens=False)
                if len(ids) >= 2:
                    totals.add_document(len(ids) - 1, len(text.encode("utf-8")))
                    yield ids

        bar = progress_bar(desc="loss", unit="tok", disable=not progress, leave=False)
    with bar:
        scored = score_documents(model, documents(), window, stride, on_scored=bar.update,
                                 reference=reference, processes=processes)
    totals.nll, totals.kl = scored.nll, scored.kl
    if not totals.tokens:
        raise DowncycleError(f"{source}: no tokens to score")
    metrics = {k: MetricValue(v) for k, v in totals.metrics().items()}
    if is_reference:
        metrics["kl_ref"] = MetricValue(0.0, 0.0)
    elif totals.kl is not None:
        metrics["kl_ref"] = MetricValue(*totals.kl_ref())
    metrics["tokens"] = MetricValue(float(totals.tokens))
    metrics["bytes"] = MetricValue(float(totals.bytes))
    return TaskResult(version, "loss", 0, limit, totals.documents, metrics)
