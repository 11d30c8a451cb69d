"""Fixtures of the width tests in this folder: ``wo``, the in-memory oracle (the root conftest's
``width_oracle``: a model computing with the units a plan does *not* keep set to zero by forward hooks
on transformers' own modules) with this folder's plan and model helpers."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch


def layers_of(model) -> torch.nn.ModuleList:
    n = model.config.get_text_config().num_hidden_layers
    return next(m for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n
                and name.rsplit(".", 1)[-1] in ("layers", "h"))


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def without_norms(model):
    """``model`` with every norm module an identity (the same in a source and its prune: what is
    left is the slicing of every other tensor, exact under LayerNorm too)."""
    for name, module in list(model.named_modules()):
        if "norm" in type(module).__name__.lower() and name:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, torch.nn.Identity())
    return model


def write_plan(path: Path, **fields) -> Path:
    path.write_text(json.dumps({"kind": "width-plan", **fields}))
    return path


def random_rows(n_layers: int, full: int, keep: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [sorted(torch.randperm(full, generator=g)[:keep].tolist()) for _ in range(n_layers)]


def heads_in_groups(kv_rows: list[list[int]], per: int, group: int, seed: int) -> list[list[int]]:
    """Per layer, ``per`` random query heads of each kept KV group of ``group`` query heads."""
    g = torch.Generator().manual_seed(seed)
    return [sorted(k * group + int(i) for k in row for i in torch.randperm(group, generator=g)[:per]) for row in kv_rows]


def load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def wo(width_oracle):
    """The oracle and its helpers, as a namespace: ``wo.masked(model, family, ffn=..., heads=...)``, ``wo.names(family)`` ..."""
    return SimpleNamespace(**vars(width_oracle), heads_in_groups=heads_in_groups, layers_of=layers_of, load=load, logits=logits,
                           random_rows=random_rows, without_norms=without_norms, write_plan=write_plan)
