"""Tiny real Hugging Face models of many families, built locally with random weights.

Used by the test suite (every family's cut is checked against transformers) and by the demo until
the shipped reference model exists. Weights are drawn with a large ``initializer_range`` so that
every layer visibly changes the logits: a test that drops the wrong layer must fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# family -> (transformers config class, model class, config overrides). Shapes are shared below.
_COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.2,
               bos_token_id=1, eos_token_id=2, pad_token_id=0)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 5}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 3}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8, "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 2}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 4}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 4,
                    "layer_types": ["sliding_attention", "sliding_attention", "full_attention"] * 2}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {}),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
                  "shared_expert_intermediate_size": 32, "decoder_sparse_step": 2, "mlp_only_layers": [4]}),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", {"no_rope_layer_interval": 3}),
    "cohere2": ("Cohere2Config", "Cohere2ForCausalLM", {"sliding_window": 4, "sliding_window_pattern": 3}),
}
_GPT2_NAMES = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
               "max_position_embeddings": "n_positions", "intermediate_size": "n_inner"}


def tiny_config(family: str, **overrides: Any) -> Any:
    """A transformers config object for a tiny model of ``family``."""
    import transformers

    config_cls, _, extra = FAMILIES[family]
    kwargs = {**_COMMON, **extra, **overrides}
    if family == "gpt2":
        kwargs = {_GPT2_NAMES.get(k, k): v for k, v in kwargs.items() if k != "num_key_value_heads"}
    if family == "gpt_neox":
        kwargs.pop("num_key_value_heads")
    return getattr(transformers, config_cls)(**kwargs)


def build_tiny(family: str, path: Path, seed: int = 0, dtype: str = "float32", **overrides: Any) -> Path:
    """Build a tiny random model of ``family`` and ``save_pretrained`` it (safetensors) to ``path``."""
    import torch
    import transformers

    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, FAMILIES[family][1])(config).to(getattr(torch, dtype)).eval()
    model.save_pretrained(path, safe_serialization=True)
    return Path(path)
