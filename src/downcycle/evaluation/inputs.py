"""Every input of ``downcycle eval``, checked before the first model is loaded.

An evaluation of several models on several tasks can run for hours; a missing ``--data``, a corpus
tokenized for another model, a task file without the fields the task reads or a model directory
without safetensors weights or tokenizer should stop it at once, in one line, not after the first
models were scored. The checks read files only (task items are read and every prompt is rendered,
which is cheap next to scoring them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..compat import check_corpus, checked_task_docs
from ..errors import DowncycleError
from ..loading import check_weights, load_tokenizer, read_config, resolve_source
from ..recipe import EvalConfig
from .task_data import find_local, load_docs
from .tasks import TASKS, GenerativeSpec, GroupSpec, LossSpec, get_task

__all__ = ["check_inputs", "model_tokenizer"]


def model_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer of the model in ``path`` (:func:`~downcycle.loading.load_tokenizer`).

    Raises:
        DowncycleError: the model has no usable tokenizer, in one line.
    """
    try:
        return load_tokenizer(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise DowncycleError(f"{path}: no usable tokenizer ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None


def check_inputs(cfg: EvalConfig) -> dict[Path, Any]:
    """Refuse ``cfg`` if any model, ``--data`` or task data cannot be evaluated as asked.

    Returns:
        each model directory's tokenizer, loaded to check it (the evaluation uses it, not a second load).

    Raises:
        DowncycleError: naming the model, file or task at fault.
    """
    specs = [get_task(t) for t in cfg.task_names]
    models: list[tuple[Path, dict[str, Any]]] = []
    tokenizers: dict[Path, Any] = {}
    for source in cfg.models:
        path = resolve_source(source)
        config = read_config(path)
        check_weights(path)
        if path not in tokenizers:  # fast; the model itself loads only when its turn comes
            tokenizers[path] = model_tokenizer(path, cfg.trust_remote_code)
        models.append((path, config))
    if cfg.reference is not None:
        _check_reference(cfg, tokenizers, any(isinstance(spec, LossSpec) for spec in specs))
    for spec in specs:
        if isinstance(spec, LossSpec):
            _check_loss_data(cfg, models)
        elif isinstance(spec, GroupSpec):
            names = [n for n in spec.subtasks
                     if cfg.task_data is None or find_local(cfg.task_data, TASKS[n].stem, TASKS[n].split) is not None]
            for name in names:  # evaluate_group refuses a group with no local subtask at all
                _check_items(cfg, TASKS[name])
        else:
            _check_items(cfg, spec)
            if isinstance(spec, GenerativeSpec):
                for path, config in models:
                    _check_room(spec, path, config)
    return tokenizers


def _check_reference(cfg: EvalConfig, tokenizers: dict[Path, Any], loss: bool) -> None:
    """``--reference``: a model of the loss task whose tokenizer is every evaluated model's (KL compares
    next-token distributions over the same tokens)."""
    if not loss:
        raise DowncycleError(f"--reference {cfg.reference}: only the loss task uses it (add loss to --tasks)")
    path = resolve_source(cfg.reference)
    read_config(path)
    check_weights(path)
    vocab = (tokenizers[path] if path in tokenizers else model_tokenizer(path, cfg.trust_remote_code)).get_vocab()
    for model, tok in tokenizers.items():
        if tok.get_vocab() != vocab:
            raise DowncycleError(f"--reference {cfg.reference}: its tokenizer differs from {model}'s; KL(reference‖model) "
                                 "needs the same tokens")


def _check_room(spec: GenerativeSpec, path: Path, config: dict[str, Any]) -> None:
    """A model whose context is no longer than the answers a generative task generates cannot run it."""
    from ..architecture import text_config

    text = text_config(config)[0]
    length = next((v for k in ("n_positions", "max_position_embeddings", "n_ctx") if isinstance(v := text.get(k), int) and v > 0), None)
    if length is not None and length <= spec.max_gen_toks:
        raise DowncycleError(f"task {spec.name}: {path}'s maximum length {length} leaves no room for a prompt before "
                             f"{spec.max_gen_toks} generated tokens")


def _check_loss_data(cfg: EvalConfig, models: list[tuple[Path, dict[str, Any]]]) -> None:
    if cfg.data is None:
        raise DowncycleError("task loss needs --data (held-out text or a corpus directory)")
    corpus = Path(cfg.data)
    if (corpus / "corpus.json").is_file():
        from ..corpus.shards import read_corpus_meta

        meta = read_corpus_meta(corpus)
        if "val" not in meta["splits"]:
            raise DowncycleError(f"{corpus}: the corpus has no val split for task loss (build it with --val > 0)")
        for path, config in models:
            check_corpus(corpus, meta, path, config)
    else:
        from ..corpus.sources import check_source, iter_texts

        check_source(cfg.data)
        if next(iter_texts(cfg.data, text_field=cfg.text_field, limit_docs=1), None) is None:  # its first record
            raise DowncycleError(f"{cfg.data}: no documents")


def _check_items(cfg: EvalConfig, spec: Any) -> None:
    """Read ``spec``'s items (those ``--limit`` keeps; all of them with ``--sample``) and its few-shot
    pool, and render every prompt and answer the evaluation could use."""
    local = find_local(cfg.task_data, spec.stem, spec.split) if cfg.task_data is not None else None
    where = str(local) if local is not None else f"{spec.hf_path} ({spec.split})"
    generative = isinstance(spec, GenerativeSpec)

    def render() -> None:
        docs = load_docs(spec, spec.split, cfg.task_data)
        if cfg.limit is not None and getattr(cfg, "sample", None) is None:
            docs = docs[: cfg.limit]
        shots = spec.default_shots if cfg.shots is None else cfg.shots
        pool = load_docs(spec, spec.fewshot_split, cfg.task_data) if shots and spec.fewshot_split is not None else []
        for doc in docs:
            if generative:
                spec.context(doc, []) + spec.target(doc)
            else:
                spec.request(doc, [])
        for doc in pool:  # as a few-shot example
            if generative:
                spec.context(doc, []) + spec.target(doc)
            else:
                spec.question(doc) + spec.answer(doc)

    checked_task_docs(spec.name, where, render)
