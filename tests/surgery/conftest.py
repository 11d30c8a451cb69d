"""Fixtures of the surgery tests: `downcycle` run in-process and the one-line error it must give;
the in-memory references a cut or a width prune must equal, built from transformers' own modules
(the source with only some layers kept; the source with chosen neurons, heads or embedding channels
masked to zero by forward hooks: the root conftest's ``width_oracle``, an oracle independent of the
width table in downcycle.architecture.width); the tiny models' width; and plan helpers.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="session")
def shape() -> Shape:
    """The tiny models' sizes: ``shape.ffn``, ``.heads``, ``.kv``, ``.hidden``, ``.layers``, ``.head_dim``."""
    return Shape()


@pytest.fixture(scope="session")
def oracle(width_oracle):
    """``oracle(family)`` -> (MLP output projection, attention output projection, embedding modules)."""
    return width_oracle.names


@pytest.fixture(scope="session")
def complement(width_oracle):
    """``complement(kept, n)`` -> the indices below ``n`` not in ``kept``, in order."""
    return width_oracle.complement


@pytest.fixture(scope="session")
def head_columns(width_oracle):
    """``head_columns(heads, head_dim=8)`` -> the columns of those heads in a projection's input."""
    return width_oracle.head_columns


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
def masked(width_oracle):
    """``with masked(model, family, ffn=None, heads=None, kv_heads=None, hidden=None, layer_map=None)``: the
    root conftest's width oracle (``model`` with what the plan fields do *not* keep set to zero)."""
    return width_oracle.masked


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
