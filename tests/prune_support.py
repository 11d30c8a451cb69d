"""What the width-prune tests compare against, built from transformers' own modules in memory: the
source model with chosen neurons, heads or embedding channels masked to zero by forward hooks.

The module names here are the test's own knowledge of each family (an independent oracle for the
width table in downcycle.architecture.width), not read from downcycle.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from conftest import decoder_layers
from downcycle.recipe import PruneConfig
from downcycle.surgery.prune import prune

# family -> (MLP output projection, attention output projection, embedding modules)
_HF = ("mlp.down_proj", "self_attn.o_proj", ("model.embed_tokens",))
ORACLE = {
    "gpt2": ("mlp.c_proj", "attn.c_proj", ("transformer.wte", "transformer.wpe")),
    "gpt_neox": ("mlp.dense_4h_to_h", "attention.dense", ("gpt_neox.embed_in",)),
}
WIDTH_FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2", "smollm3", "gpt2", "gpt_neox"]
MHA = {"gpt2", "gpt_neox"}  # one KV head per query head, head size = hidden / heads
HEAD_DIM = 8  # the tiny models' (hidden 32, 4 query heads, 2 KV heads)
FFN, HEADS, KV, HIDDEN, LAYERS = 64, 4, 2, 32, 6


def oracle(family: str) -> tuple[str, str, tuple[str, ...]]:
    return ORACLE.get(family, _HF)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def complement(kept: list[int], n: int) -> list[int]:
    return [i for i in range(n) if i not in set(kept)]


def head_columns(heads: list[int], head_dim: int = HEAD_DIM) -> list[int]:
    return [h * head_dim + j for h in heads for j in range(head_dim)]


def _zero(t, index):
    t = t.clone()
    t[..., index] = 0
    return t


@contextmanager
def masked(model, family: str, ffn=None, heads=None, kv_heads=None, hidden=None, layer_map=None):
    """``model`` computing with everything the plan fields do *not* keep set to zero: the inputs of
    the MLP output projection (neurons), the heads' slices of the attention output projection's
    input, and (``hidden``) the embedding channels everywhere they enter the residual stream (the
    embeddings' outputs and every layer's two output projections). OLMo2's q/k norms span the whole
    projection, so there the pruned heads' queries and keys are zeroed too. ``layer_map[j]``: the
    source layer whose plan rows the model's layer ``j`` uses (default: the identity)."""
    down, o, embeddings = oracle(family)
    hooks = []
    _, _, layers = decoder_layers(model)

    def pre(index):
        return lambda mod, args: (_zero(args[0], index), *args[1:])

    def post(index):
        return lambda mod, args, out: _zero(out, index)

    try:
        for j, layer in enumerate(layers):
            i = j if layer_map is None else layer_map[j]
            if ffn is not None:
                hooks.append(layer.get_submodule(down).register_forward_pre_hook(pre(complement(ffn[i], FFN))))
            if heads is not None:
                dead = head_columns(complement(heads[i], HEADS))
                hooks.append(layer.get_submodule(o).register_forward_pre_hook(pre(dead)))
                if family == "olmo2":
                    hooks.append(layer.get_submodule("self_attn.q_proj").register_forward_hook(post(dead)))
            if kv_heads is not None and family == "olmo2":
                dead = head_columns(complement(kv_heads[i], KV))
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


def write_plan(path: Path, **fields) -> Path:
    path.write_text(json.dumps({"kind": "width-plan", **fields}))
    return path


def random_rows(n_layers: int, full: int, keep: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [sorted(torch.randperm(full, generator=g)[:keep].tolist()) for _ in range(n_layers)]


def heads_in_groups(kv_rows: list[list[int]], per: int, seed: int) -> list[list[int]]:
    """Per layer, ``per`` random query heads of each kept KV group (2 query heads per group)."""
    g = torch.Generator().manual_seed(seed)
    group = HEADS // KV
    return [sorted(k * group + int(i) for k in row for i in torch.randperm(group, generator=g)[:per]) for row in kv_rows]


def run_prune(src: Path, out: Path, **options):
    return prune(PruneConfig(source=str(src), out=out, **options))


def load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
