"""A text source sampled from a model: ``gen:MODEL_DIR`` (sequence-level distillation data).

Healing on text the uncut model writes itself keeps the student on the teacher's own distribution,
where a corpus of old English prose would pull it elsewhere. The source streams like any other, so
``downcycle data`` budgets, splits, packs and records it unchanged; it never ends by itself, so the
corpus needs ``--tokens`` (or ``--gen-docs``).

Each document is a prompt and its sampled continuation, decoded to text (special tokens skipped):
the prompt is BOS alone, or BOS and the first ``prompt_tokens`` tokens of a document of a prompt
source (its documents cycled; shorter ones skipped). Documents are made ``batch`` at a time, every
row the same length (no padding), through ``transformers``' ``generate`` with the torch RNG seeded by
``(seed, batch index)`` for each batch: the same options give the same documents, on the same
software and thread count (float sums may round differently elsewhere, and a sample can then
differ). Sampling is temperature then top-p, as :mod:`downcycle.generation.sampling` spells them for
``generate``. A row that reaches EOS stops there; the batch runs until every row has, or ``new_tokens``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from ..recipe.data import GenerationOptions

__all__ = ["GEN_PREFIX", "GenerationOptions", "check_generated", "generator_provenance", "is_generated", "iter_generated"]
GEN_PREFIX = "gen:"


def is_generated(source: str) -> bool:
    return str(source).startswith(GEN_PREFIX)


def _model_dir(source: str) -> Path:
    return Path(source[len(GEN_PREFIX):]).expanduser()


def check_generated(source: str) -> None:
    """Fail before any work when ``gen:PATH`` names no model directory."""
    path = _model_dir(source)
    if not (path / "config.json").is_file():
        raise DowncycleError(f"{source}: {path} is not a model directory (no config.json); a gen: source samples from a local model")


def generator_provenance(source: str, options: GenerationOptions) -> dict[str, Any]:
    """What the corpus manifest records of a ``gen:`` source: the model directory, the SHA-256 of its
    config, tokenizer and weight files, and the sampling options."""
    from ..artifacts.hashes import file_sha256

    if options.prompts is not None:  # fail before any work, not in the reader thread
        from .sources import check_source

        check_source(options.prompts)
    path = _model_dir(source)
    names = sorted(p.name for p in path.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name in
                                                                       ("config.json", "tokenizer.json", "model.safetensors.index.json")))
    return {"model": str(path.resolve()), "sha256": {n: file_sha256(path / n) for n in names}, "sampling": asdict(options)}


def _prompts(tokenizer: Any, options: GenerationOptions, text_field: str) -> Iterator[list[int]]:
    """Endless prompt token ids: BOS (when the tokenizer has one) and the prompt source's first tokens."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    if options.prompts is None:
        if not bos:
            raise DowncycleError("gen: the model's tokenizer has no BOS token; give --gen-prompts to prompt from a text source")
        yield from itertools.repeat(bos)
        return
    from .sources import iter_texts

    while True:
        found = False
        for text in iter_texts(options.prompts, text_field=text_field):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][: options.prompt_tokens]
            if len(ids) == options.prompt_tokens:
                found = True
                yield bos + ids
        if not found:
            raise DowncycleError(f"--gen-prompts {options.prompts}: no document has {options.prompt_tokens} tokens")


def sample_batch(model: Any, prompt: Any, options: GenerationOptions, eos_ids: set[int], seed: int | None) -> list[list[int]]:
    """Continue each row of ``prompt`` (B, P) with ``model.generate`` (temperature, then top-p); each
    row's new tokens, up to and including its EOS.

    Args:
        seed: seeds the draws (None: greedy, or the global RNG as it is); the global torch RNG's
            state is restored afterwards, so the caller's random stream is left as it was.
    """
    import torch

    from ..generation.sampling import SamplingParams, generate_kwargs

    params = SamplingParams(temperature=options.temperature, top_p=options.top_p)
    kwargs = generate_kwargs(params, options.new_tokens, eos_ids)
    devices = [prompt.device] if prompt.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode():
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kwargs)  # (B, P + n)
    rows = []
    for new in out[:, prompt.size(1):].tolist():
        end = next((i + 1 for i, t in enumerate(new) if t in eos_ids), len(new))  # finished rows are padded after their EOS
        rows.append(new[:end])
    return rows


def iter_generated(source: str, options: GenerationOptions, text_field: str = "text") -> Iterator[dict[str, Any]]:
    """Records ``{text_field: prompt + continuation}`` sampled from the model of ``source``."""
    import torch

    from ..loading import load_model, load_tokenizer

    check_generated(source)
    path = _model_dir(source)
    tokenizer = load_tokenizer(path)
    model = load_model(path, dtype="float32", device=options.device)
    model.eval()
    device = next(model.parameters()).device
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)  # an id or a list of ids
    eos_ids = {i for i in (configured if isinstance(configured, list) else [configured]) + [tokenizer.eos_token_id] if i is not None}
    prompts = _prompts(tokenizer, options, text_field)
    made = 0
    for b in itertools.count():
        size = options.batch if options.docs is None else min(options.batch, options.docs - made)
        if size <= 0:
            return
        batch = list(itertools.islice(prompts, size))
        rows = sample_batch(model, torch.tensor(batch, device=device), options, eos_ids, options.seed * 1_000_003 + b)
        for ids, new in zip(batch, rows):
            yield {text_field: tokenizer.decode(ids + new, skip_special_tokens=True)}
        made += size
