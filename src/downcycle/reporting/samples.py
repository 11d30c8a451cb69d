"""Sample generations for the report: every model continues the same prompts, greedily, so that the
texts differ only because the models do.

They are cached in ``DIR/report/samples.json``: re-rendering the report reuses a model's samples
while its prompts, token count and manifest (or config, for a model without one) are unchanged, and
generates again only what changed or when asked (``--regenerate``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..artifacts.hashes import file_sha256
from ..artifacts.manifest import MANIFEST_NAME
from .experiment import Experiment, Model

__all__ = ["SAMPLES_NAME", "model_key", "read_samples", "sample_generations"]
SAMPLES_NAME = "samples.json"


def model_key(model: Model) -> str | None:
    """What identifies the weights a sample came from: the hash of the model's manifest (written
    with the weights, so a re-trained model has a new one), else of its config.json."""
    for name in (MANIFEST_NAME, "config.json"):
        if (model.path / name).is_file():
            return file_sha256(model.path / name)
    return None


def read_samples(path: Path) -> dict[str, Any]:
    """The cached samples (``{"models": {}}`` when there are none or the file is unreadable)."""
    try:
        doc = json.loads(Path(path).read_text())
        return doc if isinstance(doc, dict) and isinstance(doc.get("models"), dict) else {"models": {}}
    except (OSError, json.JSONDecodeError):
        return {"models": {}}


def sample_generations(exp: Experiment, prompts: list[str], new_tokens: int, cache: dict[str, Any], *,
                       regenerate: bool = False, device: str = "auto") -> dict[str, Any]:
    """Greedy continuations of ``prompts`` by every model of ``exp``.

    Args:
        cache: a previous ``samples.json`` document; entries for the same prompts, token count and
            model key are reused unless ``regenerate``.

    Returns:
        The new ``samples.json`` document: ``{"prompts", "new_tokens", "decoding": "greedy",
        "models": {name: {"path", "key", "texts": [continuation per prompt], "stops": [...]}}}``;
        a model that cannot be loaded gets ``{"error": ...}`` instead of texts.
    """
    same_request = cache.get("prompts") == prompts and cache.get("new_tokens") == new_tokens
    doc: dict[str, Any] = {"prompts": prompts, "new_tokens": new_tokens, "decoding": "greedy", "models": {}}
    todo = []
    for m in exp.models:
        key, old = model_key(m), cache.get("models", {}).get(m.name)
        if not regenerate and same_request and old and old.get("key") == key and "texts" in old:
            doc["models"][m.name] = old
        else:
            todo.append((m, key))
    if todo:
        from ..progress import progress_bar

        for m, key in progress_bar(todo, desc="samples", unit="model", leave=False):
            doc["models"][m.name] = {"path": str(m.path), "key": key, **_generate(m.path, prompts, new_tokens, device)}
    doc["models"] = {m.name: doc["models"][m.name] for m in exp.models}  # the experiment's order
    return doc


def _generate(path: Path, prompts: list[str], new_tokens: int, device: str) -> dict[str, Any]:
    import torch

    from ..errors import DowncycleError
    from ..generation.greedy import greedy_generate
    from ..loading import load_model, load_tokenizer

    try:
        tokenizer = load_tokenizer(path)
        model = load_model(path, dtype="float32", device=device)
    except (OSError, ValueError, DowncycleError) as e:
        return {"error": str(e).splitlines()[0] if str(e) else type(e).__name__}
    model.eval()
    torch.manual_seed(0)  # greedy decoding is deterministic; this only pins anything a model might sample internally
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    gens = greedy_generate(model, tokenizer, ids, until=(), max_new_tokens=new_tokens, batch_size=len(prompts))
    return {"texts": [g.text for g in gens], "stops": [g.stop for g in gens]}
