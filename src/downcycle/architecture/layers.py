"""The depth axis of model families: where the decoder layers live, and the config fields a layer cut rewrites.

Generic inference first: the decoder layers are the tensor-name prefix ``P.N.`` whose indices are
exactly ``0..L-1`` for the config's layer count ``L`` (``model.layers.N.``, ``transformer.h.N.``,
``gpt_neox.layers.N.``, ``model.language_model.layers.N.`` ...); every config list of length ``L``
whose key mentions ``layer`` holds one entry per layer and is sliced by source index. Then a small
table of exceptions, as data: fields that hold layer *indices*, fields that encode positions as a
threshold, a period or a pattern, per-layer lists that transformers derives when a config omits
them, and the features a layer cut cannot express, which are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import DowncycleError

Config = dict[str, Any]

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# The longest sequence a model takes, as the evaluation harness looks it up.
POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx")
# A learned table of position embeddings (GPT-2's wpe, OPT's embed_positions): a sequence longer than
# its rows is an IndexError in the embedding. Rotary and ALiBi models have none: they run (if less
# well) past their config's max_position_embeddings.
POSITION_TABLE = re.compile(r"(?:^|\.)(?:wpe|embed_positions|position_embeddings)\.weight$")
TEXT_CONFIG_KEYS = ("text_config", "language_config", "llm_config")
# Prefixes of towers that are not the text decoder, used only to break ties between layer groups.
NON_TEXT_HINTS = ("vision", "visual", "audio", "encoder", "mtp", "speech")
# Output heads that, when present, mean the embeddings are not tied.
_HEAD_NAMES = ("lm_head.weight", "embed_out.weight", "output.weight", "output_projection.weight")
# Module path segments that hold a decoder layer's feed-forward block
# (Llama/Qwen/Gemma/GPT-2: "mlp", Mixtral: "block_sparse_moe", others: "feed_forward", "ffn").
MLP_SEGMENTS = ("mlp", "feed_forward", "ffn", "block_sparse_moe")
# Norms a decoder layer applies to its MLP block's output before the residual add (Gemma 2/3, OLMo 2):
# a linear map folded into the MLP's down projection would pass through them, so it is not exact.
MLP_OUTPUT_NORMS = ("post_feedforward_layernorm", "post_mlp_layernorm", "post_ffw_norm", "post_ffn_norm")
# Config fields of families whose head does more than a linear map (softcapping, scaling).
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale", "logit_softcapping")


def _every(default: int, key: str | None = "sliding_window_pattern") -> Callable[[Config, int], list]:
    """Gemma2/3, Cohere2, EXAONE-4: every ``p``-th layer global, the rest sliding."""

    def derive(cfg: Config, n: int) -> list[str]:
        p = cfg.get(key, default) if key else default
        return ["sliding_attention" if (i + 1) % p else "full_attention" for i in range(n)]

    return derive


def _qwen_window(cfg: Config, n: int) -> list[str]:
    on = cfg.get("use_sliding_window", False) and cfg.get("sliding_window", 4096) is not None
    return ["sliding_attention" if on and i >= cfg.get("max_window_layers", 28) else "full_attention" for i in range(n)]


def _qwen2_moe_window(cfg: Config, n: int) -> list[str]:
    on = cfg.get("use_sliding_window", False)
    mwl = cfg.get("max_window_layers", 28)
    return ["sliding_attention" if on and (i + 1) % 2 and i < mwl else "full_attention" for i in range(n)]


def _smollm3_rope(cfg: Config, n: int) -> list[int]:
    k = cfg.get("no_rope_layer_interval", 4)
    return [int((i + 1) % k != 0) for i in range(n)]


def _smollm3_types(cfg: Config, n: int) -> list[str]:
    on = cfg.get("use_sliding_window", False) and cfg.get("sliding_window") is not None
    return ["sliding_attention" if on and not cfg["no_rope_layers"][i] else "full_attention" for i in range(n)]


# Per-layer lists that transformers derives in the config class when config.json omits them
# (older checkpoints). A cut must write them explicitly: re-deriving for the new depth would give
# the kept layers different attention types. Verified against transformers in tests/architecture/test_layers.py.
IMPLICIT_PER_LAYER: dict[str, dict[str, Callable[[Config, int], list]]] = {
    "gemma2": {"layer_types": _every(2, key=None)},
    "gemma3_text": {"layer_types": _every(6)},
    "cohere2": {"layer_types": _every(4)},
    "exaone4": {"layer_types": _every(4)},
    "qwen2": {"layer_types": _qwen_window},
    "qwen3": {"layer_types": _qwen_window},
    "qwen2_moe": {"layer_types": _qwen2_moe_window},
    "smollm3": {"no_rope_layers": _smollm3_rope, "layer_types": _smollm3_types},
}
# Config lists of layer indices (not one entry per layer): remapped to the new positions.
INDEX_LIST_FIELDS = ("mlp_only_layers", "moe_layers")
# Per-layer fields whose key does not say "layer".
EXTRA_PER_LAYER_FIELDS = ("hybrid_override_pattern",)
# Integer thresholds: layer i has the property iff i < value. field -> predicate "the field matters".
THRESHOLD_FIELDS: dict[str, Callable[[Config], bool]] = {
    "first_k_dense_replace": lambda cfg: True,
    # Qwen: only a fallback for deriving layer_types; once those are explicit it is informative.
    "max_window_layers": lambda cfg: bool(cfg.get("use_sliding_window", False)) and not cfg.get("layer_types"),
}
# Layer i has the property iff i % period == offset.
PERIODIC_FIELDS = (("attn_layer_period", "attn_layer_offset"), ("expert_layer_period", "expert_layer_offset"))
# Patterns that summarise an explicit per-layer list; kept only while they still describe it.
PATTERN_FIELDS = {"sliding_window_pattern": "layer_types"}
# Integers that mention layers but do not encode positions among the decoder layers.
INERT_INT_FIELDS = ("no_rope_layer_interval", "num_nextn_predict_layers", "num_kv_shared_layers", "decoder_sparse_step")
# Features no layer cut can express by copying whole tensors.
REFUSED: dict[str, str] = {
    "hidden_size_per_layer_input": "per-layer input embeddings pack every layer into one tensor",
}
# Families whose layers compute something from their own index when the model is built, which no
# tensor or config field carries: a layer may keep its index, never move to another.
INDEX_BUILT: dict[str, str] = {
    "diffllama": "each layer's lambda_init is computed from its index when the model is built (transformers' "
                 "lambda_init_fn), so a layer moved to another index computes something else",
}


_TRANSLATED_INT_FIELDS = frozenset(
    [*LAYER_COUNT_KEYS, *THRESHOLD_FIELDS, *INERT_INT_FIELDS, *PATTERN_FIELDS, *(k for pair in PERIODIC_FIELDS for k in pair)]
)


@dataclass(frozen=True)
class LayerLayout:
    """Where a checkpoint keeps its decoder layers, and everything else."""

    model_type: str
    text_path: tuple[str, ...]  # () or ("text_config",): where the decoder's config lives
    count_key: str  # "num_hidden_layers", "n_layer", ...
    num_layers: int
    prefix: str  # "model.layers." -- layer N's tensors are prefix + "N." + suffix
    layers: dict[int, tuple[str, ...]]  # source index -> tensor names
    others: tuple[str, ...]  # embeddings, final norm, head, other towers: copied verbatim
    tied_embeddings: bool

    def layer_name(self, index: int, source_name: str) -> str:
        """The name ``source_name`` (a tensor of some layer) takes as layer ``index``."""
        assert source_name.startswith(self.prefix), source_name
        return f"{self.prefix}{index}.{source_name[len(self.prefix):].split('.', 1)[1]}"


def text_config(config: Config) -> tuple[Config, tuple[str, ...]]:
    """The decoder's config (nested ``text_config`` for multimodal models) and its path."""
    for key in TEXT_CONFIG_KEYS:
        sub = config.get(key)
        if isinstance(sub, dict) and any(k in sub for k in LAYER_COUNT_KEYS):
            return sub, (key,)
    return config, ()


def layer_count(cfg: Config | Any) -> tuple[str, int]:
    """The decoder's layer-count field and value, in a config.json dict or a loaded config object.

    Raises:
        DowncycleError: if none of :data:`LAYER_COUNT_KEYS` holds an integer.
    """
    for key in LAYER_COUNT_KEYS:
        value = _field(cfg, key)
        if isinstance(value, int) and not isinstance(value, bool):
            return key, value
    raise DowncycleError(f"config.json has no layer count ({' / '.join(LAYER_COUNT_KEYS)})")


def num_layers(config: Config) -> int:
    """The decoder's layer count of a whole config.json (a nested ``text_config`` included)."""
    return layer_count(text_config(config)[0])[1]


def loaded_text_config(model_config: Any) -> Any:
    """The decoder's config of a loaded model's ``config`` (transformers' ``get_text_config()``)."""
    return model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config


def uses_sliding_window(cfg: Config | Any) -> bool:
    """Whether some layer of this (text) config attends through a sliding window: ``sliding_window``
    set and not switched off by ``use_sliding_window`` (Mistral, Qwen2), or a ``sliding_*`` layer type."""
    if _field(cfg, "sliding_window") and _field(cfg, "use_sliding_window", True) is not False:
        return True
    return any("sliding" in str(t) for t in (_field(cfg, "layer_types") or []))


def logit_transform(cfg: Config | Any) -> str | None:
    """``"field=value"`` when the config makes the logits more than the output layer's linear map of
    the last hidden state (softcapping, scaling: Gemma-2, Cohere, Granite ...), else None."""
    for key in LOGIT_TRANSFORMS:
        value = _field(cfg, key)
        if value not in (None, 1, 1.0):
            return f"{key}={value}"
    return None


def is_mlp_module(name: str) -> bool:
    """Whether the module named ``name`` (``model.layers.3.mlp.up_proj``) lies in a feed-forward block."""
    return any(s in name.split(".") for s in MLP_SEGMENTS)


def _field(cfg: Config | Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


def max_positions(cfg: Config | Any) -> tuple[str, int] | None:
    """The decoder's position limit (field name and value) in a config.json dict (its text config)
    or a loaded config object; None when the config states none."""
    cfg = text_config(cfg)[0] if isinstance(cfg, dict) else cfg
    for key in POSITION_KEYS:
        value = _field(cfg, key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return key, value
    return None


def position_limit(config: Config, tensor_names: list[str]) -> tuple[str, int] | None:
    """The hard limit on a sequence's length (config field and value): :func:`max_positions` of a
    checkpoint with a learned position table (:data:`POSITION_TABLE`); None for one without (rotary,
    ALiBi), which takes longer sequences."""
    return max_positions(config) if any(POSITION_TABLE.search(n) for n in tensor_names) else None


def infer_layout(config: Config, tensor_names: list[str]) -> LayerLayout:
    """Find the decoder layers of a checkpoint from its config and tensor names.

    Raises:
        DowncycleError: if no group of tensors matches the layer count, several do, or there are
            tensors for layers beyond it (e.g. multi-token-prediction layers).
    """
    cfg, path = text_config(config)
    count_key, n = layer_count(cfg)
    model_type = cfg.get("model_type") or config.get("model_type") or "unknown"
    groups: dict[str, dict[int, list[str]]] = {}
    for name in tensor_names:
        m = re.search(r"(^|\.)(\d+)\.", name)
        if m:
            prefix = name[: m.start(2)]
            groups.setdefault(prefix, {}).setdefault(int(m[2]), []).append(name)
    matching = [p for p, g in groups.items() if set(range(n)) <= set(g)]
    if len(matching) > 1:
        textual = [p for p in matching if not any(h in p.lower() for h in NON_TEXT_HINTS)]
        matching = textual if len(textual) == 1 else matching
    if not matching:
        found = ", ".join(f"{p}N ({len(g)} layers)" for p, g in groups.items()) or "none"
        raise DowncycleError(f"cannot find the {n} decoder layers of this {model_type} model in its tensors (groups found: {found})")
    if len(matching) > 1:
        raise DowncycleError(f"ambiguous decoder layers in this {model_type} model: {', '.join(matching)}")
    prefix = matching[0]
    extra = sorted(i for i in groups[prefix] if i >= n)
    if extra:
        raise DowncycleError(
            f"{model_type} checkpoint has tensors for layer {extra[0]} ({prefix}{extra[0]}.*) beyond "
            f"{count_key}={n} (multi-token-prediction layers?); downcycle cannot cut it"
        )
    layer_names = {i: tuple(groups[prefix][i]) for i in range(n)}
    in_layers = {t for names in layer_names.values() for t in names}
    others = tuple(t for t in tensor_names if t not in in_layers)
    tied = not any(t.endswith(h) for t in others for h in _HEAD_NAMES)
    return LayerLayout(model_type, path, count_key, n, prefix, layer_names, others, tied)


def refusal(cfg: Config, kept: list[int], n: int) -> str | None:
    """Why a cut of this config to ``kept`` cannot be expressed, or None."""
    for key, why in REFUSED.items():
        if cfg.get(key):
            return f"{key}={cfg[key]}: {why}"
    why = INDEX_BUILT.get(str(cfg.get("model_type")))
    if why and kept != list(range(len(kept))):
        return f"model_type {cfg['model_type']}: {why}"
    for key, value in cfg.items():
        if (
            "layer" in key and isinstance(value, int) and not isinstance(value, bool) and 0 < value < n
            and key not in _TRANSLATED_INT_FIELDS
        ):
            return f"config field {key}={value} looks like a layer position that downcycle does not know how to translate"
    return None
