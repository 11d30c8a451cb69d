"""Finding and loading models and their tokenizers for every stage, in one place.

Weights are read only from safetensors (or, on explicit conversion, with ``weights_only=True``);
remote code (a model's or a tokenizer's) runs only when the caller passes ``trust_remote_code=True``. torch and transformers are
imported inside the functions that need them, so the CLI starts fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import DowncycleError
from .jsonfile import read_json

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a cut needs from the hub: configs, tokenizer files and safetensors weights, never pickles.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*", "LICENSE*"]

__all__ = ["check_weights", "config_objection", "cpu_has_native_bf16", "eos_token_ids", "load_model", "load_tokenizer", "read_config",
           "resolve_device", "resolve_precision", "resolve_source"]


def resolve_source(source: str | Path) -> Path:
    """A local checkpoint directory for ``source``: the directory itself, or a hub snapshot.

    Raises:
        DowncycleError: for a path that is not a directory, or a hub id that cannot be fetched
            (offline, unknown, gated), with the reason in one line.
    """
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise DowncycleError(f"{source}: not a model directory")
        return path
    text = str(source)
    if not _REPO_ID.match(text):
        raise DowncycleError(f"{source}: no such model directory")
    from .progress import quiet_library_bars

    quiet_library_bars()  # huggingface_hub's download bars
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # noqa: BLE001 -- every hub failure is reported the same way
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DowncycleError(f"{source}: not a local directory, and it could not be fetched from the Hugging Face Hub ({reason})") from None


def read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    config = read_json(path, f"is {directory} a Hugging Face model directory?")
    if not isinstance(config, dict):
        raise DowncycleError(f"{path}: not a JSON object")
    return config


def config_objection(config: dict[str, Any]) -> str | None:
    """What transformers' config class for ``config["model_type"]`` says against ``config`` (a
    config.json's contents) when it builds it, as ``from_pretrained`` will: one line, or None when it
    accepts it (and for a model type transformers does not know: remote code is not run to ask)."""
    from transformers import CONFIG_MAPPING

    if config.get("model_type") not in CONFIG_MAPPING:
        return None
    try:
        CONFIG_MAPPING[config["model_type"]].from_dict(dict(config))
    except Exception as e:  # noqa: BLE001 -- whatever it raises, from_pretrained would raise too (strict validators: their own class)
        return [line.strip() for line in str(e).splitlines() if line.strip()][-1]
    return None


def check_weights(path: str | Path) -> None:
    """Refuse, in one line, a local model directory whose safetensors weights are missing (``.bin``
    only: the fix is ``downcycle convert``), incomplete or corrupt, before transformers tries them."""
    directory = Path(path)
    if directory.is_dir():
        from .checkpoint.safetensors_index import open_checkpoint

        open_checkpoint(directory)


def resolve_device(device: str) -> str:
    """The torch device for ``--device``: ``auto`` is ``cuda`` when a CUDA GPU is available, else ``cpu``
    (never ``mps``: name it to use it); any other name is checked and returned as given.

    Raises:
        DowncycleError: for a CUDA or MPS device this machine does not have.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DowncycleError(f"--device {device}: CUDA is not available on this machine")
    if device.startswith("mps") and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DowncycleError(f"--device {device}: MPS is not available on this machine")
    return device


def load_model(path: str | Path, *, dtype: str = "auto", device: str = "cpu", trust_remote_code: bool = False,
               load_in_4bit: bool = False, compute_dtype: str | None = None) -> Any:
    """Load a causal LM from safetensors only (``use_safetensors=True``).

    With ``load_in_4bit`` the linear weights are quantised to NF4 with double quantisation
    (bitsandbytes, on a CUDA GPU or a CPU; QLoRA, Dettmers et al. 2023) from their values in
    ``dtype``, and the 4-bit layers compute in ``compute_dtype`` (default: ``dtype``). ``device``
    may be ``auto`` (:func:`resolve_device`).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from .progress import quiet_library_bars

    check_weights(path)
    device = resolve_device(device)
    quiet_library_bars()
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute_name = compute_dtype or dtype
        compute = getattr(torch, compute_name) if compute_name != "auto" else torch.bfloat16
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=compute)
        stored = getattr(torch, dtype) if dtype != "auto" else compute
        return AutoModelForCausalLM.from_pretrained(str(path), quantization_config=quant, dtype=stored, use_safetensors=True,
                                                    device_map={"": torch.device(device)}, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    return model.to(device).eval()


def load_tokenizer(source: str | Path, *, trust_remote_code: bool = False, gguf_file: str | None = None) -> Any:
    """The tokenizer of the model in ``source`` through ``transformers``' ``AutoTokenizer`` (its fast
    tokenizer where it has one), or, with ``gguf_file``, the one stored in that GGUF file of the
    directory ``source``.

    ``source`` is a directory or a hub id, used as given (:func:`resolve_source` first, to fetch only
    safetensors and tokenizer files). A tokenizer's remote code runs only with ``trust_remote_code``.

    Raises:
        transformers' own errors (``OSError``, ``ValueError``...) when there is no usable tokenizer:
        each stage says in one line what that means for it.
    """
    from transformers import AutoTokenizer

    from .progress import quiet_library_bars

    quiet_library_bars()
    where = {"gguf_file": gguf_file} if gguf_file is not None else {}
    return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code, **where)


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The token ids that end a sequence: the model's generation config's ``eos_token_id`` (what
    ``generate`` stops on), else the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return set()
    return {int(i) for i in ids} if isinstance(ids, (list, tuple)) else {int(ids)}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware: the x86 AVX512-BF16 or AMX
    instructions, as cpuinfo (inside torch) reports them. Without them bf16 products are computed by
    converting to float32, so bf16 autocast is not expected to pay (not measured: no such CPU here)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch >= 2.3; absent: no claim
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(precision: str, device_type: str) -> str:
    """``bf16`` or ``fp32`` for ``--precision`` on ``device_type`` (``cuda`` or ``cpu``).

    ``auto`` picks bf16 autocast on a CUDA GPU that supports bfloat16, and on a CPU with native bf16
    matrix instructions (:func:`cpu_has_native_bf16`): on one with AVX512-BF16, LoRA and distillation
    of a 135M-parameter model did 1.73x and 1.64x the tokens per CPU second of float32
    (benchmarks/bench_precision.py, BENCHMARKS.md); else fp32.
    """
    import torch

    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device_type == "cpu" and cpu_has_native_bf16() else "fp32"
