"""``downcycle eval``: evaluate one or more models on loss and benchmark tasks.

Writes ``OUT/<model name>/results.json`` (:mod:`downcycle.evaluation.results`),
``OUT/<model name>/samples/<task>.jsonl`` (per-item log-likelihoods and metrics; for single-answer
multiple-choice tasks also each choice's length in characters and the gold log-likelihood, its
per-character form and the Brier score) and the stage
manifest ``OUT/downcycle.json``, all through one atomic output directory. Finished tasks are kept in
``.OUT.partial/`` until then, so that an interrupted run resumes (:mod:`downcycle.evaluation.resume`).
Started by ``torchrun`` (or accelerate's launcher) in several processes, every process scores its
share of each task's batches and process 0 writes the same outputs (:mod:`downcycle.evaluation.distributed`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..architecture import loaded_text_config
from ..artifacts.atomic import atomic_output_dir, check_new_output
from ..artifacts.hashes import file_sha256
from ..artifacts.manifest import git_revision, versions, write_manifest
from ..checkpoint.safetensors_index import INDEX_NAME
from ..errors import DowncycleError
from ..loading import load_model, resolve_device, resolve_source
from ..recipe import EvalConfig, inputs_of, to_dict
from .distributed import ONE_PROCESS, Processes, joined, refuse_across
from .encoding import Encoder
from .generate_until import evaluate_generative
from .inputs import check_inputs, model_tokenizer
from .loss import evaluate_loss
from .multiple_choice import McOptions, evaluate_group, evaluate_mc
from .reference import ReferenceModel
from .results import RESULTS_NAME, EvalResults, ModelInfo, TaskResult, read_results
from .resume import EvalProgress, KeptElsewhere, ModelProgress
from .shared_cuts import CutFamily, cut_families
from .task_data import resolve_task_data
from .tasks import GenerativeSpec, GroupSpec, LossSpec, get_task

__all__ = ["EvalOutcome", "ReferenceModel", "max_length", "run_eval", "summary"]
_DEFAULT_MAX_LENGTH = 2048  # the harness's default when neither config nor tokenizer says


@dataclass
class EvalOutcome:
    out: Path
    models: dict[str, EvalResults]
    seconds: float
    main: bool = True  # False in the processes other than 0 of several, which write and print nothing


def max_length(model: Any, tokenizer: Any) -> int:
    """The model's maximum sequence length, looked up as the harness does (config fields, then the
    tokenizer's ``model_max_length``, then 2048)."""
    cfg = loaded_text_config(model.config)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    tok = getattr(tokenizer, "model_max_length", None)
    return tok if isinstance(tok, int) and tok < 1e12 else _DEFAULT_MAX_LENGTH


def _model_info(name: str, path: Path, model: Any) -> ModelInfo:
    hashes = {f: file_sha256(path / f) for f in ("config.json", INDEX_NAME) if (path / f).is_file()}
    return ModelInfo(name, str(path), sum(p.numel() for p in model.parameters()), hashes)


def _names(models: list[str]) -> list[str]:
    """Output subdirectory per model: the directory name, made unique."""
    names: list[str] = []
    for m in models:
        base = Path(m).name or "model"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def _write_samples(directory: Path | None, task: str, samples: list[dict]) -> None:
    if directory is None:  # a process other than 0
        return
    directory.mkdir(exist_ok=True)
    (directory / f"{task}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


def evaluate_model(cfg: EvalConfig, source: str, name: str, model_dir: Path | None,
                   progress: ModelProgress | KeptElsewhere | None = None, tokenizer: Any = None,
                   reference: ReferenceModel | None = None, family: CutFamily | None = None,
                   processes: Processes = ONE_PROCESS) -> EvalResults:
    """Evaluate one model on every task of ``cfg`` and write its results into ``model_dir``.

    ``tokenizer``: the model's, when the caller has loaded it already (:func:`check_inputs` does).
    ``reference``: ``cfg.reference``, shared by the models of one run (made here when None).
    ``family``: the depth cuts of one reference this model is evaluated with, layer by layer
    (:mod:`downcycle.evaluation.shared_cuts`).
    ``processes``: with several, each scores its share of every task (``model_dir`` None and
    progress bars off in all but process 0).

    With ``progress``, tasks finished by an interrupted run are taken from it and each task is
    recorded there as it finishes (:mod:`downcycle.evaluation.resume`).
    """
    if reference is None:  # evaluated on its own: its reference released when it is done
        with closing(ReferenceModel(cfg)) as own:
            return evaluate_model(cfg, source, name, model_dir, progress, tokenizer, own, family, processes)
    start = time.perf_counter()
    path = resolve_source(source)
    device = resolve_device(cfg.device)
    if _layerwise(cfg, path, device, processes.world):
        from ..layerwise import open_layerwise

        from .layerwise_target import LayerwiseTarget

        lw = open_layerwise(path, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
        runner = family.member(path, lw) if family is not None else LayerwiseTarget(lw)
        model = lw.model  # its layers on the meta device: what needs only the config, the embeddings or the head
    else:
        runner = model = load_model(path, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
    if tokenizer is None:
        tokenizer = model_tokenizer(path, cfg.trust_remote_code)
    limit_len = max_length(model, tokenizer)
    encoder = Encoder(tokenizer, limit_len, add_bos=cfg.add_bos)
    shown = cfg.progress and processes.main
    opts = McOptions(cfg.task_data, cfg.limit, cfg.shots, cfg.batch_size, cfg.shared_context, shown, cfg.seed,
                     sample=cfg.sample, processes=processes)
    samples_dir = model_dir / "samples" if model_dir is not None else None
    tasks: dict[str, TaskResult] = {}
    for task in cfg.task_names:
        done = progress.load(task) if progress is not None else None
        if done is not None:
            tasks.update(done)
            continue
        before = set(tasks)
        spec = get_task(task)
        if isinstance(spec, LossSpec):
            window = min(cfg.window or limit_len, limit_len)
            itself = reference.is_model(path)
            kl = reference.path is not None and (not itself or family is not None)  # cuts run together all score it
            tasks[task] = evaluate_loss(runner, tokenizer, cfg.data, text_field=cfg.text_field, window=window,
                                        stride=min(cfg.stride or window, window), limit=cfg.limit, progress=shown,
                                        version=spec.version, is_reference=itself, processes=processes,
                                        reference=reference.model(layerwise=runner is not model) if kl else None)
        elif isinstance(spec, GroupSpec):
            tasks[task], subresults, samples = evaluate_group(runner, encoder, spec, opts)
            for sub, result in subresults.items():
                tasks.setdefault(sub, result)
            for sub, items in samples.items():
                _write_samples(samples_dir, sub, items)
        elif isinstance(spec, GenerativeSpec):
            tasks[task], samples = evaluate_generative(model, encoder, spec, opts)
            _write_samples(samples_dir, task, samples)
        else:
            tasks[task], samples, _ = evaluate_mc(runner, encoder, spec, opts)
            _write_samples(samples_dir, task, samples)
        if progress is not None:
            progress.save(task, {k: v for k, v in tasks.items() if k not in before})
    if cfg.harness:
        from .harness import run_harness_tasks

        names = [t.strip() for t in cfg.harness.split(",") if t.strip()]
        tasks.update(run_harness_tasks(model, tokenizer, names, limit=cfg.limit, shots=cfg.shots, batch_size=cfg.batch_size,
                                       device=device, include_path=cfg.harness_include))
    results = EvalResults(model=_model_info(name, path, model), tasks=tasks, config=to_dict(cfg), versions=versions(),
                          git_revision=git_revision(), seconds=time.perf_counter() - start)
    if model_dir is not None:
        results.write(model_dir)
    return results


def _layerwise(cfg: EvalConfig, path: Path, device: str, world: int = 1) -> bool:
    """Whether a model runs one decoder layer at a time: ``--layerwise``/``--no-layerwise``, else when
    its weights or ``--reference``'s (the two run the same way) do not fit the device's free memory;
    then only what is run that way may be asked."""
    from ..layerwise import fits_in_memory

    weights = [path] + ([resolve_source(cfg.reference)] if cfg.reference is not None else [])
    big = [p for p in weights if not fits_in_memory(p, cfg.dtype, device)] if cfg.layerwise is None else []
    chosen = bool(big) if cfg.layerwise is None else cfg.layerwise
    if chosen:
        why = "" if cfg.layerwise else f" ({big[0]} does not fit the {device}'s free memory)"
        generative = [t for t in cfg.task_names if isinstance(get_task(t), GenerativeSpec)]
        if generative or cfg.harness:
            what = f"generative tasks ({', '.join(generative)})" if generative else "--harness"
            raise DowncycleError(f"--layerwise{why}: {what} not run layer by layer yet (the loss and log-likelihood tasks are)")
        if world > 1:
            raise DowncycleError(f"--layerwise{why}: not run across {world} processes (run it in one)")
    return chosen


def _families(cfg: EvalConfig, paths: list[Path]) -> dict[Path, CutFamily]:
    """Models run layer by layer that are depth cuts of one reference, evaluated together."""
    device = resolve_device(cfg.device)

    def open_reference(source: Path) -> Any:
        from ..layerwise import open_layerwise

        return open_layerwise(source, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code)

    return cut_families(paths, lambda p: _layerwise(cfg, p, device), open_reference)


def run_eval(cfg: EvalConfig) -> EvalOutcome:
    """Evaluate ``cfg.models`` on ``cfg.tasks`` and write ``cfg.out``.

    Without ``cfg.task_data`` the default task-data directory is used when it exists
    (:func:`downcycle.evaluation.task_data.resolve_task_data`); the results record the one used.
    Started in several processes (``WORLD_SIZE`` > 1), each scores its share and process 0 writes
    ``cfg.out``; the others return an outcome with ``main`` False and no models.
    """
    start = time.perf_counter()
    cfg = dataclasses.replace(cfg, task_data=resolve_task_data(cfg.task_data))
    out = Path(cfg.out)
    with joined(cfg.device) as processes:
        if processes.world > 1:
            refuse_across(cfg, processes.world)
        check_new_output(out, cfg.force, inputs_of(cfg))
        tokenizers = check_inputs(cfg)  # every model, --data and task file, before loading any model
        if not processes.main:
            _evaluate_share(cfg, tokenizers, processes)
            return EvalOutcome(out, {}, time.perf_counter() - start, main=False)
        return _evaluate_and_write(cfg, tokenizers, processes, start)


def _evaluate_share(cfg: EvalConfig, tokenizers: dict[Path, Any], processes: Processes) -> None:
    """A process other than 0: its share of every task process 0 has not kept from an interrupted run."""
    with closing(ReferenceModel(cfg)) as reference:
        for source, name in zip(cfg.models, _names(cfg.models)):
            path = resolve_source(source)
            complete, tasks = processes.share(None)
            if not complete:
                evaluate_model(cfg, source, name, None, KeptElsewhere(tasks), tokenizers.get(path), reference, processes=processes)


def _evaluate_and_write(cfg: EvalConfig, tokenizers: dict[Path, Any], processes: Processes, start: float) -> EvalOutcome:
    out = Path(cfg.out)
    names = _names(cfg.models)
    results: dict[str, EvalResults] = {}
    progress = EvalProgress(cfg)  # what an interrupted run of the same options finished
    reference = ReferenceModel(cfg)
    kept: dict[str, ModelProgress] = {}
    try:
        paths = [resolve_source(source) for source in cfg.models]
        for path, name in zip(paths, names):
            kept[name] = progress.model(name, path)
        families = _families(cfg, [p for p, n in zip(paths, names) if not (kept[n].dir / RESULTS_NAME).is_file()])
        for source, path, name in zip(cfg.models, paths, names):
            done = kept[name].dir / RESULTS_NAME
            processes.share((done.is_file(), kept[name].kept(cfg.task_names)))  # what the other processes skip
            if done.is_file():
                results[name] = read_results(done)
                continue
            family = families.get(path.resolve())
            results[name] = evaluate_model(cfg, source, name, kept[name].dir, kept[name], tokenizer=tokenizers.get(path),
                                           reference=reference, family=family, processes=processes)
            if family is not None:
                family.done(path)
    except DowncycleError:  # the same options fail the same way again: nothing worth resuming
        progress.finish()
        raise
    finally:
        reference.close()  # the reference's rows kept layer by layer
    with atomic_output_dir(out, force=cfg.force) as tmp:
        for name in names:
            kept[name].move_to(tmp / name)
        inputs = {name: {"path": r.model.path, **r.model.hashes} for name, r in results.items()}
        outputs = {name: f"{name}/results.json" for name in results}
        write_manifest(tmp, "eval", to_dict(cfg), inputs, outputs)
    progress.finish()
    return EvalOutcome(out, results, time.perf_counter() - start)


_HEADLINE = ("acc", "acc_norm", "perplexity", "bits_per_byte", "kl_ref")


def summary(result: EvalOutcome) -> str:
    """Each model's headline metrics, one line a model (nothing in a process other than 0 of several)."""
    if not result.main:
        return ""
    lines = []
    for name, res in result.models.items():
        parts = [f"{task} {m}={v.value:.4f}" for task, t in res.tasks.items() for m, v in t.metrics.items()
                 if m in _HEADLINE or m.startswith("exact_match")]
        lines.append(f"{name}: " + ", ".join(parts))
    return "\n".join(lines + [f"wrote {result.out} ({result.seconds:.1f} s)"])
