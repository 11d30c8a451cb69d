"""Writing the trained model: a normal Hugging Face checkpoint, plus the adapter for LoRA/QLoRA.

The output loads with ``AutoModelForCausalLM.from_pretrained(OUT)`` whatever the method: adapters are
merged into a full-precision reload of the base, and the adapter is kept in ``OUT/adapter/`` for peft
users. For QLoRA the base's quantised linear weights are first replaced by their dequantized values
(NF4 codes times block scales, :func:`~downcycle.training.methods.qlora.dequantized_weights`): those are
the weights the adapter was trained and validated against, so the merged model computes what the
trained model computed (up to float rounding), where the original weights + adapter would not (and
re-quantising the merged weights to 4 bits, as peft's own merge does, would add a second rounding).
Weights are saved in the source checkpoint's dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts.sidecars import copy_sidecars

__all__ = ["ADAPTER_DIR", "save_trained", "source_dtype", "source_inputs"]

ADAPTER_DIR = "adapter"


def source_dtype(source: Path) -> str:
    """The dtype the source checkpoint declares (``float32`` when it declares none)."""
    from ..loading import read_config

    cfg = read_config(source)
    declared = cfg.get("dtype") or cfg.get("torch_dtype") or (cfg.get("text_config") or {}).get("dtype")
    return declared if declared in ("float32", "bfloat16", "float16") else "float32"


def save_trained(model: Any, state_dict: dict[str, Any], adapter: bool, source: Path, out: Path, trust_remote_code: bool) -> dict[str, Any]:
    """Save the trained model to ``out`` (an existing, empty directory). Main process only.

    Args:
        model: the unwrapped trained model (a ``PeftModel`` when ``adapter``).
        state_dict: its full state dict, gathered by ``accelerator.get_state_dict`` (FSDP/ZeRO-3 safe).
        adapter: whether ``model`` is a peft model whose adapter is merged on export.
        source: the checkpoint training started from (tokenizer files are copied from it).

    Returns:
        What was written, for the manifest.
    """
    import torch

    from ..progress import quiet_library_bars

    quiet_library_bars()  # transformers' "Writing model shards" and "Loading weights" (the base, for a merge)
    out = Path(out)
    dtype_name = source_dtype(source)
    dtype = getattr(torch, dtype_name)
    copy_sidecars(source, out, rewritten={"config.json", "generation_config.json", "mergekit.yaml"})
    if not adapter:
        cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state_dict.items()}
        model.save_pretrained(out, state_dict=cast)
        return {"weights": "full", "dtype": dtype_name}
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .methods.lora import quiet_peft

    # peft picks the LoRA tensors out of the full state dict (and strips the adapter name).
    model.save_pretrained(out / ADAPTER_DIR, state_dict=state_dict)
    base = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code)
    quantized = getattr(model.config, "quantization_config", None) is not None
    if quantized:
        from .methods.qlora import dequantized_weights

        params = dict(base.named_parameters())
        for name, weight in dequantized_weights(model).items():
            params[name].data.copy_(weight.reshape(params[name].shape))
    with quiet_peft():
        merged = PeftModel.from_pretrained(base, str(out / ADAPTER_DIR)).merge_and_unload()
    merged.to(dtype).save_pretrained(out)
    what = "merged dequantized 4-bit base + LoRA adapter" if quantized else "merged base + LoRA adapter"
    return {"weights": what, "adapter": ADAPTER_DIR, "dtype": dtype_name}


def source_inputs(path: Path | None) -> dict[str, Any]:
    """Provenance of a model directory: its path and the hashes of its config and safetensors headers."""
    if path is None:
        return {}
    from ..artifacts.hashes import file_sha256
    from ..checkpoint import open_checkpoint
    from ..checkpoint.safetensors_index import INDEX_NAME

    path = Path(path)
    hashes: dict[str, Any] = {"config.json": file_sha256(path / "config.json")}
    if (path / INDEX_NAME).is_file():
        hashes[INDEX_NAME] = file_sha256(path / INDEX_NAME)
    hashes["shard_headers"] = open_checkpoint(path).header_sha256
    return {"path": str(path.resolve()), "hashes": hashes}
