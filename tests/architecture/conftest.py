"""Fixtures of the width tests in this folder: ``wo``, the in-memory oracle, a model computing with the units a plan
does *not* keep set to zero by forward hooks, built from transformers' own modules. The module names
are the test's own knowledge of each family (written from the modeling code), independent of the
layout downcycle infers."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# family -> (MLP output projection, attention output projection, embedding modules), in a decoder layer / the model
_LLAMA = ("mlp.down_proj", "self_attn.o_proj", ("model.embed_tokens",))
ORACLE = {
    **dict.fromkeys(("gemma", "vaultgemma", "olmo", "olmo3", "granite", "helium", "glm", "glm4", "cohere", "cohere2", "exaone4",
                     "arcee", "seed_oss", "ernie4_5", "hyperclovax", "jais2", "apertus", "nemotron", "stablelm", "cwm", "ministral",
                     "ministral3", "hunyuan_v1_dense"), _LLAMA),
    "nanochat": ("mlp.fc2", "self_attn.o_proj", ("model.embed_tokens",)),
    "biogpt": ("fc2", "self_attn.out_proj", ("biogpt.embed_tokens", "biogpt.embed_positions")),
    "gpt_neo": ("mlp.c_proj", "attn.attention.out_proj", ("transformer.wte", "transformer.wpe")),
    "starcoder2": ("mlp.c_proj", "self_attn.o_proj", ("model.embed_tokens",)),
    "phi": ("mlp.fc2", "self_attn.dense", ("model.embed_tokens",)),
    "persimmon": ("mlp.dense_4h_to_h", "self_attn.dense", ("model.embed_tokens",)),
    "gptj": ("mlp.fc_out", "attn.out_proj", ("transformer.wte",)),
    "codegen": ("mlp.fc_out", "attn.out_proj", ("transformer.wte",)),
    "gpt_bigcode": ("mlp.c_proj", "attn.c_proj", ("transformer.wte", "transformer.wpe")),
    "falcon": ("mlp.dense_4h_to_h", "self_attention.dense", ("transformer.word_embeddings",)),
    "opt": ("fc2", "self_attn.out_proj", ("model.decoder.embed_tokens", "model.decoder.embed_positions")),
    "xglm": ("fc2", "self_attn.out_proj", ("model.embed_tokens",)),
}
QK_OVER_ALL_HEADS = {"olmo3"}  # q/k RMSNorms over the whole projection: the pruned heads' queries and keys are zero too
FFN, HEADS, HIDDEN, HEAD_DIM = 64, 4, 32, 8  # downcycle.tiny's sizes


def layers_of(model) -> torch.nn.ModuleList:
    n = model.config.get_text_config().num_hidden_layers
    return next(m for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n
                and name.rsplit(".", 1)[-1] in ("layers", "h"))


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def complement(kept: list[int], n: int) -> list[int]:
    return [i for i in range(n) if i not in set(kept)]


def head_columns(heads: list[int]) -> list[int]:
    return [h * HEAD_DIM + j for h in heads for j in range(HEAD_DIM)]


def _zero(t, index):
    t = t.clone()
    t[..., index] = 0
    return t


@contextmanager
def masked(model, family: str, ffn=None, heads=None, kv_heads=None, hidden=None, kv: int = 2):
    """``model`` computing with what the plan fields do not keep set to zero: the inputs of the MLP
    output projection (neurons), the heads' slices of the attention output projection's input
    (heads), the pruned heads' queries and the pruned groups' keys where q/k norms span all heads,
    and (``hidden``) the channels where they enter the residual stream (embeddings, both output
    projections of every layer)."""
    down, o, embeddings = ORACLE[family]
    hooks = []

    def pre(index):
        return lambda mod, args: (_zero(args[0], index), *args[1:])

    def post(index):
        return lambda mod, args, out: _zero(out, index)

    try:
        for i, layer in enumerate(layers_of(model)):
            if ffn is not None:
                hooks.append(layer.get_submodule(down).register_forward_pre_hook(pre(complement(ffn[i], FFN))))
            if heads is not None:
                dead = head_columns(complement(heads[i], HEADS))
                hooks.append(layer.get_submodule(o).register_forward_pre_hook(pre(dead)))
                if family in QK_OVER_ALL_HEADS:
                    hooks.append(layer.get_submodule("self_attn.q_proj").register_forward_hook(post(dead)))
            if kv_heads is not None and family in QK_OVER_ALL_HEADS:
                dead = head_columns(complement(kv_heads[i], kv))
                hooks.append(layer.get_submodule("self_attn.k_proj").register_forward_hook(post(dead)))
            if hidden is not None:
                for name in (down, o):
                    hooks.append(layer.get_submodule(name).register_forward_hook(post(complement(hidden, HIDDEN))))
        if hidden is not None:
            for name in embeddings:
                hooks.append(model.get_submodule(name).register_forward_hook(post(complement(hidden, HIDDEN))))
        yield model
    finally:
        for h in hooks:
            h.remove()


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
def wo():
    """The oracle and its helpers, as a namespace: ``wo.masked(model, family, ffn=..., heads=...)``, ``wo.ORACLE`` ..."""
    return SimpleNamespace(FFN=FFN, HEAD_DIM=HEAD_DIM, HEADS=HEADS, HIDDEN=HIDDEN, ORACLE=ORACLE, QK_OVER_ALL_HEADS=QK_OVER_ALL_HEADS, complement=complement, head_columns=head_columns, heads_in_groups=heads_in_groups, layers_of=layers_of, load=load, logits=logits, masked=masked, random_rows=random_rows, without_norms=without_norms, write_plan=write_plan)
