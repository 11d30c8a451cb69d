"""Shared fixtures: tiny real Hugging Face models built locally (no network), and an in-memory
reference for what a cut model must compute."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls are far faster on one thread than with OpenMP sync on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(family, **overrides)`` -> path of a saved tiny model, built once per session."""
    from downcycle.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny")
    cache: dict[str, Path] = {}

    def make(family: str, **overrides) -> Path:
        key = family + repr(sorted(overrides.items()))
        if key not in cache:
            cache[key] = build_tiny(family, root / f"{family}-{len(cache)}", **overrides)
        return cache[key]

    return make


def decoder_layers(model):
    """The ModuleList of decoder layers of a loaded model, and its parent and attribute name."""
    import torch

    n = model.config.get_text_config().num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and name.rsplit(".", 1)[-1] in ("layers", "h"):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            return parent, name.rsplit(".", 1)[-1], module
    raise AssertionError("no decoder layer list found")


def keep_layers_in_memory(model, kept: list[int]):
    """The reference a cut must equal: ``model`` with only source layers ``kept`` (in order, repeats
    as independent copies), built in memory by transformers' own objects.

    Per-layer config lists (attention types, RoPE flags) come from the config that *transformers*
    derived for the source, so they are an independent oracle for downcycle's config surgery.
    """
    ref = copy.deepcopy(model)
    parent, attr, layers = decoder_layers(ref)
    new = [copy.deepcopy(layers[i]) for i in kept]
    for j, layer in enumerate(new):
        for sub in layer.modules():
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = j
    setattr(parent, attr, type(layers)(new))
    cfg = ref.config.get_text_config()
    for key in ("layer_types", "no_rope_layers"):
        if getattr(cfg, key, None) is not None:
            setattr(cfg, key, [getattr(cfg, key)[i] for i in kept])
    if hasattr(cfg, "n_layer"):
        cfg.n_layer = len(kept)
    else:
        cfg.num_hidden_layers = len(kept)
    return ref


@pytest.fixture(scope="session")
def real_corpus(tmp_path_factory):
    """A small real corpus (King James Bible from examples/corpus, tokenized by examples/tokenizer):
    64-token packed sequences, 10% held out, built once per session by `downcycle data`'s library entry."""
    from downcycle.corpus.build import build_corpus
    from downcycle.recipe import DataConfig

    examples = Path(__file__).resolve().parent.parent / "examples"
    out = tmp_path_factory.mktemp("corpus") / "kjv"
    return build_corpus(DataConfig(tokenizer=str(examples / "tokenizer"), source=[str(examples / "corpus" / "kjv.jsonl.gz")],
                                   out=out, tokens="120K", seq_len=64, val=0.1, progress=False))


@pytest.fixture(scope="session")
def real_model(tiny_model):
    """A tiny Llama with examples/tokenizer's 8192-token vocabulary and its tokenizer files beside it."""
    import shutil

    path = tiny_model("llama", vocab_size=8192)
    for f in (Path(__file__).resolve().parent.parent / "examples" / "tokenizer").iterdir():
        shutil.copy2(f, path / f.name)
    return path
