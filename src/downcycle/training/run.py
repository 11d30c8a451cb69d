"""``run_train``: the library entry point of ``downcycle train``.

Resolves the config (an axolotl file, required inputs), opens the corpus, runs the
:class:`~downcycle.training.loop.Trainer`, and writes ``OUT`` atomically: the trained model, the
adapter (LoRA/QLoRA), the loss log and plot, TensorBoard logs and the manifest. Checkpoints of the
unfinished run live in ``OUT.run/`` and are removed once ``OUT`` is complete.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts.atomic import check_new_output
from ..artifacts.loss_log import LOG_NAME, PLOT_NAME, read_log
from ..errors import DowncycleError
from ..recipe import TrainConfig, inputs_of, to_dict

__all__ = ["TrainResult", "can_resume", "run_train", "summary"]


@dataclass
class TrainResult:
    out: Path
    method: str
    steps: int
    tokens: int
    train_loss: float
    val_loss: float | None
    val_loss_start: float | None
    tokens_per_second: float
    main_process: bool = True
    notes: list[str] = field(default_factory=list)


def run_train(config: TrainConfig, datasets: tuple[Any, Any | None] | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.data`` and write ``config.out``.

    Args:
        config: the run's settings; with ``config.axolotl`` set, the file's settings are merged in.
        datasets: ``(train, val)`` map-style datasets to use instead of ``config.data`` (tests, notebooks).

    Returns:
        A summary on every process (``main_process`` says which one wrote ``OUT``).

    Raises:
        DowncycleError: for bad input, an existing ``OUT`` without ``--force``, or a diverged run.
    """
    from .loop import Trainer
    from .methods import get_method

    notes: list[str] = []
    seq_len: int | None = None  # the axolotl file's sequence_len, checked against the corpus
    if config.axolotl is not None:
        from .axolotl import apply_axolotl

        config, notes, seq_len = apply_axolotl(config)
    for name, flag in (("model", "MODEL"), ("out", "--out")):
        if getattr(config, name) is None:
            raise DowncycleError(f"train needs {flag}" + (" (or base_model in the --axolotl file)" if name == "model" else ""))
    if datasets is None and config.data is None:
        raise DowncycleError("train needs --data CORPUS_DIR (a directory written by `downcycle data`)")
    out = Path(config.out)
    check_new_output(out, config.force, inputs_of(config))
    if config.resume:
        _check_resumable(out)
    from ..loading import check_weights, read_config, resolve_source

    source = resolve_source(config.model)
    model_config = read_config(source)
    check_weights(source)
    if config.train_layers is not None:  # the spec against config.json's layer count, before the model loads
        from ..architecture import num_layers
        from ..surgery.layerspec import parse_layers

        parse_layers(config.train_layers, num_layers(model_config))
    requested = str(config.model)
    config = dataclasses.replace(config, model=str(source))  # a hub id resolved to its local snapshot
    if datasets is None:
        from .batches import open_corpus

        datasets = open_corpus(config.data)
    meta = getattr(datasets[0], "meta", None)
    if meta:
        from ..compat import check_corpus

        check_corpus(config.data, meta, source, model_config)
    have = getattr(datasets[0], "seq_len", None)
    if seq_len is not None and have is not None and seq_len != have:
        raise DowncycleError(f"{config.axolotl}: sequence_len {seq_len} differs from the corpus's seq_len {have}; "
                             "rebuild the corpus with that length or edit the file")
    if have is not None:
        from ..compat import check_positions

        check_positions(f"{config.data}: seq_len", have, source, model_config, "build the corpus with --seq-len {limit} or less")
    method = get_method(config.method)
    notes += method.check_inputs(config, source, model_config, seq_len=have)  # e.g. distillation's teacher
    trainer = Trainer(config, method, *datasets)
    trainer.notes.extend(notes)
    trainer.setup()
    trainer.train()
    trainer.logger.close()
    val = trainer.val_history[-1][1] if trainer.val_history else None
    result = TrainResult(out, method.name, trainer.step, trainer.tokens, trainer.last_train_loss or float("nan"), val,
                         trainer.val_history[0][1] if trainer.val_history else None, trainer.tokens_per_second,
                         trainer.acc.is_main_process, trainer.notes)
    _write_output(trainer, source, requested, result)
    return result


def can_resume(out: Path) -> bool:
    """Whether an interrupted run writing ``out`` left a checkpoint that ``--resume`` continues from
    (the run directory's layout is the loop's: :func:`~downcycle.training.loop.run_dir_for`)."""
    from .checkpointing import latest_checkpoint
    from .loop import run_dir_for

    return latest_checkpoint(run_dir_for(Path(out)) / "checkpoints") is not None


def _check_resumable(out: Path) -> None:
    """``--resume`` with no checkpoint (a mistyped ``--out``, say) is an error, not a fresh start."""
    from .loop import run_dir_for

    run_dir = run_dir_for(out)
    if not can_resume(out):
        found = "holds no checkpoint" if run_dir.is_dir() else "does not exist"
        raise DowncycleError(f"--resume: nothing to resume for --out {out}: {run_dir} {found}; check --out, or drop --resume to start a new run")


def _write_output(trainer: Any, source: Path, requested: str, result: TrainResult) -> None:
    """Gather the weights (all processes), then write ``OUT`` from the main process."""
    from ..artifacts.atomic import atomic_output_dir
    from ..artifacts.card import write_card
    from ..artifacts.loss_log import plot_losses
    from ..artifacts.manifest import write_manifest
    from .export import save_trained, source_inputs

    acc, cfg = trainer.acc, trainer.config
    state_dict = acc.get_state_dict(trainer.model)
    if acc.is_main_process:
        with atomic_output_dir(Path(cfg.out), force=cfg.force) as tmp:
            written = save_trained(acc.unwrap_model(trainer.model), state_dict, trainer.method.adapter, source, tmp, cfg.trust_remote_code)
            records = read_log(trainer.run_dir / LOG_NAME)
            shutil.copy2(trainer.run_dir / LOG_NAME, tmp / LOG_NAME)
            if (trainer.run_dir / "tensorboard").is_dir():
                shutil.copytree(trainer.run_dir / "tensorboard", tmp / "tensorboard")
            plotted = plot_losses(records, tmp / PLOT_NAME, title=f"downcycle train --method {trainer.method.name}")
            if not plotted:
                result.notes.append("matplotlib is not installed: no loss.png (pip install 'downcycle[plots]')")
            inputs = {"model": {"source": requested, **source_inputs(source)}, "data": _data_inputs(cfg.data),
                      **trainer.method.inputs(cfg)}  # what the method read besides (distillation: its teacher)
            outputs = {**written, "steps": trainer.step, "tokens": trainer.tokens, "train_loss": result.train_loss,
                       "val_loss": result.val_loss, "val_loss_start": result.val_loss_start,
                       "tokens_per_second": result.tokens_per_second, "processes": trainer.world,
                       "global_batch_sequences": trainer.plan.global_batch, "seq_len": trainer.seq_len,
                       "precision": trainer.precision, "device": str(acc.device), "distributed": str(acc.distributed_type),
                       "trainable_parameters": trainer.trainable, "parameters": trainer.total_params,
                       "log": LOG_NAME, "plot": PLOT_NAME if plotted else None, "notes": result.notes}
            write_manifest(tmp, "train", to_dict(cfg), inputs, outputs)
            write_card(tmp)  # README.md from the manifest just written
        shutil.rmtree(trainer.run_dir, ignore_errors=True)
    acc.wait_for_everyone()


def _data_inputs(data: Path | None) -> dict[str, Any]:
    if data is None:
        return {"source": "in-memory datasets"}
    from ..artifacts.hashes import file_sha256

    corpus = Path(data) / "corpus.json"
    return {"path": str(Path(data).resolve()), "hashes": {"corpus.json": file_sha256(corpus) if corpus.is_file() else None}}


def summary(result: TrainResult) -> str | None:
    """The run in one line, after its notes; nothing from a process other than the main one of a
    distributed run (only the main process reports)."""
    if not result.main_process:
        return None
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    return "\n".join([f"  note: {note}" for note in result.notes] + [
        f"wrote {result.out}: {result.method}, {result.steps} steps, {result.tokens:,} tokens, "
        f"train loss {result.train_loss:.4f}{val} ({result.tokens_per_second:,.0f} tokens/s)"])
