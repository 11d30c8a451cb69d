"""Fixtures of the surgery tests: `downcycle` run in-process and the one-line error it must give;
the in-memory references a cut or a width prune must equal, built from transformers' own modules
(the source with only some layers kept; the source with chosen neurons, heads or embedding channels
masked to zero by forward hooks); the tiny models' width; and plan helpers.

The module names here are the test's own knowledge of each family (an independent oracle for the
width table in downcycle.architecture.width), not read from downcycle.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# family -> (MLP output projection, attention output projection, embedding modules)
_HF = ("mlp.down_proj", "self_attn.o_proj", ("model.embed_tokens",))
ORACLE = {
    "gpt2": ("mlp.c_proj", "attn.c_proj", ("transformer.wte", "transformer.wpe")),
    "gpt_neox": ("mlp.dense_4h_to_h", "attention.dense", ("gpt_neox.embed_in",)),
}
HEAD_DIM = 8  # the tiny models' (hidden 32, 4 query heads, 2 KV heads)
FFN, HEADS, KV, HIDDEN, LAYERS = 64, 4, 2, 32, 6


@dataclass(frozen=True)
class Shape:
    """The width of downcycle.tiny's models."""

    ffn: int = FFN
    heads: int = HEADS
    kv: int = KV
    hidden: int = HIDDEN
    layers: int = LAYERS
    head_dim: int = HEAD_DIM


def _complement(kept: list[int], n: int) -> list[int]:
    return [i for i in range(n) if i not in set(kept)]


def _head_columns(heads: list[int], head_dim: int = HEAD_DIM) -> list[int]:
    return [h * head_dim + j for h in heads for j in range(head_dim)]


def _oracle(family: str) -> tuple[str, str, tuple[str, ...]]:
    return ORACLE.get(family, _HF)


@pytest.fixture(scope="session")
def shape() -> Shape:
    """The tiny models' sizes: ``shape.ffn``, ``.heads``, ``.kv``, ``.hidden``, ``.layers``, ``.head_dim``."""
    return Shape()


@pytest.fixture(scope="session")
def oracle():
    """``oracle(family)`` -> (MLP output projection, attention output projection, embedding modules)."""
    return _oracle


@pytest.fixture(scope="session")
def complement():
    """``complement(kept, n)`` -> the indices below ``n`` not in ``kept``, in order."""
    return _complement


@pytest.fixture(scope="session")
def head_columns():
    """``head_columns(heads, head_dim=8)`` -> the columns of those heads in a projection's input."""
    return _head_columns


@pytest.fixture(scope="session")
def logits():
    """``logits(model, ids)`` -> the model's logits, without gradients or a cache."""

    def forward(model, ids):
        with torch.no_grad():
            return model(input_ids=ids, use_cache=False).logits

    return forward


@pytest.fixture(scope="session")
def load():
    """``load(path)`` -> the saved model in float32, in eval mode."""

    def from_disk(path: Path):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    return from_disk


@pytest.fixture(scope="session")
def keep_layers_in_memory(decoder_layers):
    """``keep_layers_in_memory(model, kept)`` -> the reference a cut must equal: ``model`` with only
    source layers ``kept`` (in order, repeats as independent copies), built in memory by transformers'
    own objects.

    Per-layer config lists (attention types, RoPE flags) come from the config that *transformers*
    derived for the source, so they are an independent oracle for downcycle's config surgery.
    """

    def keep(model, kept: list[int]):
        ref = copy.deepcopy(model)
        parent, attr, layers = decoder_layers(ref)
        new = [copy.deepcopy(layers[i]) for i in kept]
        for j, layer in enumerate(new):
            for sub in layer.modules():
                if hasattr(sub, "layer_idx"):
                    sub.layer_idx = j
        setattr(parent, attr, type(layers)(new))
        cfg = ref.config.get_text_config()
        n = len(layers)
        for key, value in list(vars(cfg).items()):  # every per-layer list (attention types, RoPE flags and thetas)
            if "layer" in key and isinstance(value, list) and len(value) == n:
                setattr(cfg, key, [value[i] for i in kept])
        if hasattr(cfg, "n_layer"):
            cfg.n_layer = len(kept)
        else:
            cfg.num_hidden_layers = len(kept)
        return ref

    return keep


@pytest.fixture(scope="session")
def masked(decoder_layers):
    """``with masked(model, family, ffn=None, heads=None, kv_heads=None, hidden=None, layer_map=None)``:
    ``model`` computing with everything the plan fields do *not* keep set to zero: the inputs of the
    MLP output projection (neurons), the heads' slices of the attention output projection's input,
    and (``hidden``) the embedding channels everywhere they enter the residual stream (the
    embeddings' outputs and every layer's two output projections). OLMo2's q/k norms span the whole
    projection, so there the pruned heads' queries and keys are zeroed too. ``layer_map[j]``: the
    source layer whose plan rows the model's layer ``j`` uses (default: the identity)."""

    def zero(t, index):
        t = t.clone()
        t[..., index] = 0
        return t

    def pre(index):
        return lambda mod, args: (zero(args[0], index), *args[1:])

    def post(index):
        return lambda mod, args, out: zero(out, index)

    @contextmanager
    def mask(model, family: str, ffn=None, heads=None, kv_heads=None, hidden=None, layer_map=None):
        down, o, embeddings = _oracle(family)
        hooks = []
        _, _, layers = decoder_layers(model)
        try:
            for j, layer in enumerate(layers):
                i = j if layer_map is None else layer_map[j]
                if ffn is not None:
                    hooks.append(layer.get_submodule(down).register_forward_pre_hook(pre(_complement(ffn[i], FFN))))
                if heads is not None:
                    dead = _head_columns(_complement(heads[i], HEADS))
                    hooks.append(layer.get_submodule(o).register_forward_pre_hook(pre(dead)))
                    if family == "olmo2":
                        hooks.append(layer.get_submodule("self_attn.q_proj").register_forward_hook(post(dead)))
                if kv_heads is not None and family == "olmo2":
                    dead = _head_columns(_complement(kv_heads[i], KV))
                    hooks.append(layer.get_submodule("self_attn.k_proj").register_forward_hook(post(dead)))
                if hidden is not None:
                    for name in (down, o):
                        hooks.append(layer.get_submodule(name).register_forward_hook(post(_complement(hidden, HIDDEN))))
            if hidden is not None:
                for name in embeddings:
                    hooks.append(model.get_submodule(name).register_forward_hook(post(_complement(hidden, HIDDEN))))
            yield model
        finally:
            for h in hooks:
                h.remove()

    return mask


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(capsys, *argv)`` -> (exit status, stderr stripped) of ``downcycle ARGV`` run in-process."""
    from downcycle import cli

    def run(capsys, *argv):
        code = cli.main([str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        return code, err

    return run


@pytest.fixture(scope="session")
def assert_clean_failure():
    """``assert_clean_failure(code, err, out_dir, *needles)``: a non-zero exit, one ``downcycle: error:``
    line holding every needle, no traceback, and (``out_dir`` given) no output or temporary left."""

    def check(code, err, out_dir, *needles):
        assert code != 0
        assert err.startswith("downcycle: error: ") and "\n" not in err, err
        assert "Traceback" not in err
        for needle in needles:
            assert str(needle) in err, (needle, err)
        if out_dir is not None:
            assert not out_dir.exists()
            assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.")], "temporary directory left behind"

    return check


@pytest.fixture(scope="session")
def write_plan():
    """``write_plan(path, **fields)`` -> ``path``, a width plan holding ``fields``."""

    def write(path: Path, **fields) -> Path:
        path.write_text(json.dumps({"kind": "width-plan", **fields}))
        return path

    return write


@pytest.fixture(scope="session")
def random_rows():
    """``random_rows(n_layers, full, keep, seed)`` -> per layer, ``keep`` sorted random indices below ``full``."""

    def rows(n_layers: int, full: int, keep: int, seed: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return [sorted(torch.randperm(full, generator=g)[:keep].tolist()) for _ in range(n_layers)]

    return rows


@pytest.fixture(scope="session")
def heads_in_groups():
    """``heads_in_groups(kv_rows, per, seed)`` -> per layer, ``per`` random query heads of each kept KV
    group (2 query heads per group)."""

    def rows(kv_rows: list[list[int]], per: int, seed: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        group = HEADS // KV
        return [sorted(k * group + int(i) for k in row for i in torch.randperm(group, generator=g)[:per]) for row in kv_rows]

    return rows


@pytest.fixture(scope="session")
def run_prune():
    """``run_prune(src, out, **options)`` -> the result of `downcycle prune` with those PruneConfig fields."""
    from downcycle.recipe import PruneConfig
    from downcycle.surgery.prune import prune

    def run(src: Path, out: Path, **options):
        return prune(PruneConfig(source=str(src), out=out, **options))

    return run
