"""The width facts of a family that only transformers' code holds: neither config.json nor the
tensor names and shapes tell them. The table of exceptions to :mod:`.width_infer`'s generic rules,
one entry per family, each with the reason (checked against transformers' modeling code, and in
tests/architecture/ on tiny models of every family listed).

- ``norm``: the norm's formula where it is not the one the config's eps field implies
  (``rms_norm_eps``: RMSNorm, any other: LayerNorm). Gemma's RMSNorm multiplies by ``(1 + w)``,
  Nemotron's LayerNorm1P too.
- ``embed_scale``: the embedding output is multiplied by ``sqrt(hidden_size)`` (Gemma). A config
  with ``scale_embedding: true`` says so itself (XGLM, BioGPT).
- ``reads_head_dim``: the attention reads ``config.head_dim`` when it is set, even where
  config.json has none (older checkpoints), so a prune can write it and shrink the hidden size
  alone. Without this fact (and without ``head_dim`` in config.json) transformers is taken to compute
  hidden_size / heads, and heads and hidden only shrink together: safe either way.
- ``heads_fill_hidden``: transformers builds the attention output projection ``hidden_size`` wide
  on both sides, whatever ``heads x head_dim`` is (Helium): heads and hidden shrink together.
- ``conv1d``: weights stored ``[in, out]`` (GPT-2's Conv1D): the same names, transposed.
- ``qkv``: the layout of a fused q/k/v projection's outputs. The name says nothing about it:
  ``q | k | v`` (Phi-3), interleaved per head ``[head, (q, k, v), head_dim]`` (GPT-NeoX), per
  model-parallel block (CodeGen). A fused projection of a family not listed is refused for heads.
- ``kv``: where the KV head count comes from when it is not ``num_key_value_heads``: a fixed count
  (multi-query attention: 1), :data:`ONE_PER_HEAD` (multi-head: the config's KV field, if any, is
  not read) or another field.
- ``fields``: config fields transformers reads a size from that the generic names miss, and
  ``defaults``: the size a null field stands for.
- ``refused``: kind -> why that kind cannot be pruned exactly (ALiBi slopes, sinusoidal tables).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .width import FFN, HEADS, HIDDEN, KV_HEADS, Axis

__all__ = ["ONE_PER_HEAD", "WIDTH_FACTS", "WidthFacts", "width_facts"]

ONE_PER_HEAD = "one KV head per query head"
Q_K_V: Axis = ((HEADS, 1), (KV_HEADS, 1), (KV_HEADS, 1))  # all queries, then all keys, then all values
PER_HEAD: Axis = ((HEADS, 3),)  # [head, (q, k, v), head_dim]
ALIBI = "ALiBi: each head's attention bias slope is computed from the number of heads, so it changes when heads go"


@dataclass(frozen=True)
class WidthFacts:
    norm: str | None = None
    embed_scale: bool = False
    reads_head_dim: bool = False
    heads_fill_hidden: bool = False
    conv1d: bool = False
    qkv: Axis | None = None
    kv: str | int | None = None
    fields: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, tuple[str, int]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


NONE = WidthFacts()
_READS = WidthFacts(reads_head_dim=True)
_GEMMA = WidthFacts(norm="rms1p", embed_scale=True, reads_head_dim=True)  # GemmaRMSNorm; embed_scale=hidden_size**0.5


def _falcon(cfg: dict[str, Any]) -> WidthFacts:
    """Falcon's query_key_value: one of three layouts by config; its MLP width is ffn_hidden_size,
    4 x hidden_size when unset (older configs). FalconAttention ignores num_kv_heads unless
    new_decoder_architecture, and has one KV head when multi_query."""
    refused = {HEADS: ALIBI} if cfg.get("alibi") else {}
    sizes = {"fields": {FFN: "ffn_hidden_size"}, "defaults": {FFN: ("hidden_size", 4)}}
    if cfg.get("new_decoder_architecture"):
        grouped = "query_key_value interleaves each KV group's query heads with its key and value"
        return WidthFacts(kv="num_kv_heads", refused={HEADS: grouped, **refused}, **sizes)
    if cfg.get("multi_query", True):
        return WidthFacts(qkv=Q_K_V, kv=1, refused=refused, **sizes)
    return WidthFacts(qkv=PER_HEAD, kv=ONE_PER_HEAD, refused=refused, **sizes)


def _gpt_bigcode(cfg: dict[str, Any]) -> WidthFacts:
    """GPTBigCode's c_attn: q | k | v with one KV head (multi_query), else interleaved per head."""
    return WidthFacts(qkv=Q_K_V, kv=1) if cfg.get("multi_query", True) else WidthFacts(qkv=PER_HEAD, kv=ONE_PER_HEAD)


def _phi(cfg: dict[str, Any]) -> WidthFacts:
    """Phi reads head_dim, but sizes its q/k LayerNorms hidden_size / heads."""
    return NONE if cfg.get("qk_layernorm") else _READS


WIDTH_FACTS: dict[str, WidthFacts | Callable[[dict[str, Any]], WidthFacts]] = {
    # norms and embedding scale: GemmaRMSNorm's (1 + w) and the sqrt(hidden_size) embedding multiplier
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
    "vaultgemma": _GEMMA,
    "nemotron": WidthFacts(norm="layernorm1p"),  # NemotronLayerNorm1P: F.layer_norm with weight + 1
    # attention that reads getattr(config, "head_dim", ...) though config.json may lack it
    "llama": _READS,
    "mistral": _READS,
    "qwen2": _READS,
    "qwen3": _READS,
    "smollm3": _READS,
    "olmo": _READS,
    "olmo2": _READS,
    "olmo3": _READS,
    "granite": _READS,
    "exaone4": _READS,
    "apertus": _READS,
    "starcoder2": _READS,
    "cohere": _READS,
    "nanochat": _READS,
    "helium": WidthFacts(reads_head_dim=True, heads_fill_hidden=True),  # o_proj = nn.Linear(hidden_size, hidden_size)
    "phi": _phi,
    # fused q/k/v projections, whose layout no name tells
    "phi3": WidthFacts(reads_head_dim=True, qkv=Q_K_V),
    "gpt2": WidthFacts(conv1d=True, qkv=((HEADS, 1), (HEADS, 1), (HEADS, 1)), kv=ONE_PER_HEAD),  # Conv1D: [in, out]
    "gpt_neox": WidthFacts(qkv=PER_HEAD, kv=ONE_PER_HEAD),
    "persimmon": WidthFacts(qkv=PER_HEAD, kv=ONE_PER_HEAD),
    "gpt_bigcode": _gpt_bigcode,
    "falcon": _falcon,
    "gpt_neo": WidthFacts(kv=ONE_PER_HEAD, defaults={FFN: ("hidden_size", 4)}),  # GPTNeoMLP: intermediate_size or 4 x hidden_size
    "codegen": WidthFacts(kv=ONE_PER_HEAD, refused={HEADS: "qkv_proj packs q, v and k of the heads in 4 model-parallel blocks"}),
    # ALiBi families; BLOOM's MLP is always 4 x hidden_size, MPT's expansion_ratio x d_model (no width field)
    "bloom": WidthFacts(qkv=PER_HEAD, kv=ONE_PER_HEAD, refused={HEADS: ALIBI, FFN: "its MLP width is 4 x hidden_size, no config field"}),
    "mpt": WidthFacts(qkv=Q_K_V, kv=ONE_PER_HEAD,
                      refused={HEADS: ALIBI, FFN: "its MLP width is expansion_ratio x d_model, an integer multiple"}),
    # XGLM's sinusoidal position table is computed for d_model channels: no slice of a smaller one
    "xglm": WidthFacts(refused={HIDDEN: "its sinusoidal position embeddings are computed from d_model, so they change with it"}),
}


def width_facts(model_type: str, cfg: dict[str, Any]) -> WidthFacts:
    """The facts of ``model_type`` for this (text) config; none for a family not in the table."""
    facts = WIDTH_FACTS.get(model_type, NONE)
    return facts(cfg) if callable(facts) else facts
