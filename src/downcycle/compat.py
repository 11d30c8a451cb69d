"""Whether the inputs a stage combines fit together, decided from their files before any model loads.

Four pairings are checked here, and only here:

- **teacher and student** (distillation compares their next-token distributions id by id): the
  same tokenizer, by a hash of its vocabulary; embedding matrices padded to different sizes
  (Qwen2.5's 152064 rows vs 151936) are fine, the KL is then taken over the shared rows;
- **corpus and model**: the corpus was tokenized by the model's tokenizer, and its ids fit the
  model's embeddings;
- **task data and task**: the items have the fields the task's prompt and answer read;
- **sequence length and model**: a corpus's ``seq_len`` (or calibration windows) fit a learned
  position table (GPT-2's has ``n_positions`` rows; a longer sequence fails deep in the embedding,
  after the load).

Everything is read from ``config.json``, ``tokenizer.json``, ``tokenizer_config.json``,
``corpus.json`` and safetensors headers; nothing here imports torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DowncycleError

__all__ = ["DistillVocab", "TokenizerFiles", "check_corpus", "check_distill", "check_positions", "check_tokenizer", "checked_task_docs",
           "embedding_rows", "tokenizer_files", "vocab_fingerprint"]

_SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")
# What a malformed task item raises from a spec's field accessors (doc["ctx_a"], doc["choices"][3], ...).
_ITEM_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


@dataclass(frozen=True)
class TokenizerFiles:
    """What a directory's tokenizer files say about its vocabulary.

    Attributes:
        file_sha256: sha256 of ``tokenizer.json`` as stored (what ``corpus.json`` records).
        vocab_sha256: sha256 of the vocabulary alone (model vocabulary and merges, added tokens,
            normaliser and pre-tokeniser), unchanged by re-saving or by padding/truncation settings.
        size: token ids the tokenizer can produce (highest id + 1).
        special: bos/eos/pad/unk token strings from ``tokenizer_config.json``.
    """

    directory: Path
    file_sha256: str
    vocab_sha256: str
    size: int
    special: dict[str, str] = field(default_factory=dict)


def vocab_fingerprint(doc: dict[str, Any]) -> tuple[str, int]:
    """``(vocab_sha256, size)`` of a parsed ``tokenizer.json`` (see :class:`TokenizerFiles`)."""
    model = dict(doc.get("model") or {})
    if isinstance(model.get("merges"), list):  # tokenizers >= 0.20 writes pairs, older versions "a b" strings
        model["merges"] = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    added = sorted((t.get("id"), t.get("content"), bool(t.get("special"))) for t in doc.get("added_tokens") or [])
    canonical = {"model": model, "added": added, "normalizer": doc.get("normalizer"), "pre_tokenizer": doc.get("pre_tokenizer")}
    vocab = model.get("vocab")
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab or [])))  # BPE/WordPiece dict, Unigram list
    ids += [t[0] for t in added if isinstance(t[0], int)]
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return digest, (max(ids) + 1 if ids else 0)


def tokenizer_files(directory: str | Path) -> TokenizerFiles | None:
    """The tokenizer identity of a model or tokenizer directory; None without a ``tokenizer.json``.

    Raises:
        DowncycleError: a ``tokenizer.json`` that is not valid JSON.
    """
    directory = Path(directory)
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DowncycleError(f"{path}: not valid JSON ({e})") from None
    vocab_sha, size = vocab_fingerprint(doc if isinstance(doc, dict) else {})
    special: dict[str, str] = {}
    try:
        cfg = json.loads((directory / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    for key in _SPECIAL:
        value = cfg.get(key) if isinstance(cfg, dict) else None
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            special[key] = value
    return TokenizerFiles(directory, hashlib.sha256(raw).hexdigest(), vocab_sha, size, special)


def embedding_rows(model_config: dict[str, Any]) -> int | None:
    """Rows of the model's token embedding (``vocab_size`` of its decoder config), or None if unstated."""
    from .architecture import text_config

    rows = text_config(model_config)[0].get("vocab_size")
    return rows if isinstance(rows, int) and not isinstance(rows, bool) else None


@dataclass
class DistillVocab:
    """How a teacher's and a student's vocabularies line up: ``shared`` ids compared, and notes."""

    shared: int | None
    notes: list[str] = field(default_factory=list)


def check_distill(student: Path, student_config: dict[str, Any], teacher: Path, teacher_config: dict[str, Any]) -> DistillVocab:
    """Refuse a teacher whose token ids do not mean what the student's mean.

    Returns:
        The number of leading logits the two models share (``None``: equal sizes, nothing to trim).

    Raises:
        DowncycleError: different tokenizers, or (without tokenizer files to decide) different
            vocabulary sizes, or embeddings too small for the tokenizer.
    """
    s_rows, t_rows = embedding_rows(student_config), embedding_rows(teacher_config)
    s_tok, t_tok = tokenizer_files(student), tokenizer_files(teacher)
    if s_tok is not None and t_tok is not None:
        if s_tok.vocab_sha256 != t_tok.vocab_sha256:
            raise DowncycleError(
                f"--teacher {teacher}: its tokenizer differs from the student's ({student}): {t_tok.size} vs {s_tok.size} "
                "tokens, different vocabularies; distillation compares the two models' next-token distributions id by id, "
                "so the teacher must use the student's tokenizer")
        size = s_tok.size
    elif s_rows != t_rows:
        missing = student if s_tok is None else teacher
        raise DowncycleError(f"--teacher {teacher}: {t_rows} vocabulary entries vs the student's {s_rows}, and {missing} has no "
                             "tokenizer.json to show they share a tokenizer; distillation needs the same vocabulary")
    else:
        size = None
    notes = []
    if s_tok is not None and t_tok is not None:
        differ = [k for k in _SPECIAL if s_tok.special.get(k) != t_tok.special.get(k)]
        if differ:
            notes.append(f"teacher and student share a vocabulary but name different special tokens ({', '.join(differ)}); "
                         "the corpus's were the student's")
    if s_rows is None or t_rows is None or s_rows == t_rows:
        return DistillVocab(None, notes)
    shared = min(s_rows, t_rows)
    if size is not None and size > shared:
        small = "teacher" if t_rows < s_rows else "student"
        raise DowncycleError(f"the {small}'s embeddings have {shared} rows, fewer than the tokenizer's {size} tokens "
                             f"({teacher if small == 'teacher' else student}/config.json vocab_size)")
    notes.append(f"teacher and student share a tokenizer but their embeddings are padded to {t_rows} and {s_rows} rows; "
                 f"the KL is taken over the {shared} shared token ids")
    return DistillVocab(shared, notes)


def check_corpus(corpus: Path, meta: dict[str, Any], model: Path, model_config: dict[str, Any]) -> None:
    """Refuse a corpus that the model cannot read: ids beyond its embeddings, or another tokenizer's ids.

    Raises:
        DowncycleError: naming the corpus, the model and what differs.
    """
    corpus_vocab, rows = meta.get("vocab_size"), embedding_rows(model_config)
    if isinstance(corpus_vocab, int) and rows is not None and corpus_vocab > rows:
        raise DowncycleError(f"{corpus}: the corpus was tokenized with a {corpus_vocab}-token vocabulary, larger than "
                             f"the model's {rows} embeddings ({model}); build the corpus with the model's tokenizer")
    recorded = meta.get("tokenizer") or {}
    mine = tokenizer_files(model)
    if mine is None or not isinstance(recorded, dict):
        return
    if recorded.get("sha256") == mine.file_sha256:
        return
    theirs = recorded.get("vocab_sha256")  # corpora written before it was recorded have only the file hash
    if theirs is not None and theirs != mine.vocab_sha256:
        raise DowncycleError(f"{corpus}: tokenized by another tokenizer ({recorded.get('source')}) than {model}'s "
                             f"({corpus_vocab} vs {mine.size} tokens, different vocabularies); build the corpus with "
                             f"`downcycle data --tokenizer {model}`")


def check_positions(what: str, length: int, model: Path, model_config: dict[str, Any], fix: str, name: str | None = None) -> None:
    """Refuse sequences of ``length`` tokens for a model (a checked safetensors directory) whose
    learned position table has fewer rows (:func:`downcycle.architecture.position_limit`).

    Args:
        what: where the length comes from, e.g. ``"CORPUS: seq_len"`` or ``"--seq-len"``.
        fix: what the user can do, e.g. ``"build the corpus with --seq-len {limit} or less"`` (``{limit}``
            is replaced by the model's limit).
        name: how the message names the model (default: its path).

    Raises:
        DowncycleError: naming ``what``, the length, the model and its config field.
    """
    from .architecture import position_limit
    from .checkpoint import open_checkpoint

    found = position_limit(model_config, list(open_checkpoint(Path(model)).tensors))
    if found is not None and length > found[1]:
        key, limit = found
        raise DowncycleError(f"{what} {length} is longer than {name or model}'s {limit} positions (config.json {key}); "
                             + fix.format(limit=limit))


def check_tokenizer(model: Path, tokenizer: str | Path, option: str = "--tokenizer") -> None:
    """Refuse a tokenizer given beside a model that has another one of its own.

    Raises:
        DowncycleError: both directories hold a ``tokenizer.json`` and their vocabularies differ.
    """
    mine, theirs = tokenizer_files(model), tokenizer_files(tokenizer)
    if mine is not None and theirs is not None and mine.vocab_sha256 != theirs.vocab_sha256:
        raise DowncycleError(f"{option} {tokenizer}: not the tokenizer of {model} ({theirs.size} vs {mine.size} tokens, "
                             f"different vocabularies); drop {option} to use the model's own")


def checked_task_docs(name: str, where: str, load: Callable[[], Any]) -> Any:
    """``load()`` (a task's documents, processed), with a malformed item reported as the task data's fault.

    Args:
        name: the task; where: its data (a local file, or the hub dataset and split).
        load: reads and processes the items and renders every prompt, raising what a spec's field
            accessors raise on an item without the fields it needs.

    Raises:
        DowncycleError: naming the data, the task and the missing field.
    """
    try:
        return load()
    except _ITEM_ERRORS as e:
        what = f"no field {e.args[0]!r}" if isinstance(e, KeyError) and e.args else f"{type(e).__name__}: {e}"
        raise DowncycleError(f"{where}: items do not fit task {name} ({what})") from None
