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
_ROPE = {"rope_type": "default", "rope_theta": 10000.0}  # families whose default is a long-context scaling
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
    # more dense decoders (width pruning is checked on each): llama-like ...
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 8}),
    "vaultgemma": ("VaultGemmaConfig", "VaultGemmaForCausalLM", {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 4}),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", {}),
    "olmo3": ("Olmo3Config", "Olmo3ForCausalLM", {"sliding_window": 4}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"embedding_multiplier": 2.0, "residual_multiplier": 0.5,
                                                        "attention_multiplier": 0.25, "logits_scaling": 2.0}),
    "helium": ("HeliumConfig", "HeliumForCausalLM", {"head_dim": 8}),
    "glm": ("GlmConfig", "GlmForCausalLM", {"head_dim": 8}),
    "glm4": ("Glm4Config", "Glm4ForCausalLM", {"head_dim": 8}),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.5}),
    "exaone4": ("Exaone4Config", "Exaone4ForCausalLM", {"sliding_window": 4}),
    "arcee": ("ArceeConfig", "ArceeForCausalLM", {"head_dim": 8}),
    "seed_oss": ("SeedOssConfig", "SeedOssForCausalLM", {"head_dim": 8}),
    "ernie4_5": ("Ernie4_5Config", "Ernie4_5ForCausalLM", {"head_dim": 8}),
    "hyperclovax": ("HyperCLOVAXConfig", "HyperCLOVAXForCausalLM", {"head_dim": 8, "embedding_multiplier": 2.0,
                                                                    "residual_multiplier": 0.5, "logits_scaling": 0.5}),
    "jais2": ("Jais2Config", "Jais2ForCausalLM", {"head_dim": 8}),
    "apertus": ("ApertusConfig", "ApertusForCausalLM", {}),
    "nemotron": ("NemotronConfig", "NemotronForCausalLM", {"head_dim": 8}),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", {}),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", {}),
    "phi": ("PhiConfig", "PhiForCausalLM", {}),
    "persimmon": ("PersimmonConfig", "PersimmonForCausalLM", {}),
    "nanochat": ("NanoChatConfig", "NanoChatForCausalLM", {}),
    "cwm": ("CwmConfig", "CwmForCausalLM", {"head_dim": 8, "sliding_window": 4}),
    "ministral": ("MinistralConfig", "MinistralForCausalLM", {"head_dim": 8, "sliding_window": 4, "rope_parameters": _ROPE}),
    "ministral3": ("Ministral3Config", "Ministral3ForCausalLM", {"head_dim": 8, "rope_parameters": {
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0, "original_max_position_embeddings": 64, "llama_4_scaling_beta": 0.1}}),
    "hunyuan_v1_dense": ("HunYuanDenseV1Config", "HunYuanDenseV1ForCausalLM", {"head_dim": 8, "rope_parameters": _ROPE}),
    "biogpt": ("BioGptConfig", "BioGptForCausalLM", {}),
    # dense decoders whose width downcycle refuses (tests/architecture): a norm over the heads, differential heads, convolutions
    "bitnet": ("BitNetConfig", "BitNetForCausalLM", {}),
    "diffllama": ("DiffLlamaConfig", "DiffLlamaForCausalLM", {}),
    "lfm2": ("Lfm2Config", "Lfm2ForCausalLM", {"layer_types": ["conv", "full_attention"] * 3}),
    "granite_swa": ("GraniteSWAConfig", "GraniteSWAForCausalLM", {}),
    # ... and GPT-like, with config names of their own (_NAMES)
    "gptj": ("GPTJConfig", "GPTJForCausalLM", {"rotary_dim": 4}),
    "gpt_bigcode": ("GPTBigCodeConfig", "GPTBigCodeForCausalLM", {}),
    "falcon": ("FalconConfig", "FalconForCausalLM", {}),
    "opt": ("OPTConfig", "OPTForCausalLM", {"word_embed_proj_dim": 32}),
    "codegen": ("CodeGenConfig", "CodeGenForCausalLM", {"rotary_dim": 4, "n_ctx": 128}),
    "gpt_neo": ("GPTNeoConfig", "GPTNeoForCausalLM", {"attention_types": [[["global", "local"], 3]], "window_size": 4}),
    "xglm": ("XGLMConfig", "XGLMForCausalLM", {}),
    "bloom": ("BloomConfig", "BloomForCausalLM", {}),
    "mpt": ("MptConfig", "MptForCausalLM", {"max_seq_len": 128}),
}
_GPT2_NAMES = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
               "max_position_embeddings": "n_positions", "intermediate_size": "n_inner"}
_NO_KV = {"num_key_value_heads": None}  # multi-head attention only: no such field
# family -> the config's own name for a shared size (None: the family has no such field; dropped)
_NAMES: dict[str, dict[str, str | None]] = {
    "gpt2": {**_GPT2_NAMES, **_NO_KV},
    "gptj": {**_GPT2_NAMES, **_NO_KV},
    "codegen": {**_GPT2_NAMES, **_NO_KV},
    "gpt_bigcode": {**_GPT2_NAMES, **_NO_KV},  # multi_query: one KV head
    "gpt_neox": _NO_KV,
    "persimmon": _NO_KV,
    "falcon": {"intermediate_size": "ffn_hidden_size", **_NO_KV},  # multi_query: one KV head
    "opt": {"intermediate_size": "ffn_dim", **_NO_KV},
    "gpt_neo": {"num_hidden_layers": "num_layers", "num_attention_heads": "num_heads", **_NO_KV},
    "biogpt": _NO_KV,
    "xglm": {"hidden_size": "d_model", "num_hidden_layers": "num_layers", "num_attention_heads": "attention_heads",
             "intermediate_size": "ffn_dim", **_NO_KV},
    "bloom": {"num_hidden_layers": "n_layer", "num_attention_heads": "n_head", "intermediate_size": None,
              "max_position_embeddings": None, **_NO_KV},
    "mpt": {"hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads", "intermediate_size": None,
            "max_position_embeddings": None, **_NO_KV},
}


def tiny_config(family: str, **overrides: Any) -> Any:
    """A transformers config object for a tiny model of ``family``."""
    import transformers

    config_cls, _, extra = FAMILIES[family]
    names = _NAMES.get(family, {})
    kwargs = {names.get(k, k): v for k, v in {**_COMMON, **extra, **overrides}.items() if names.get(k, k) is not None}
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
