"""QLoRA as a training method (:class:`QLoraMethod`: LoRA adapters on a 4-bit NF4 base), and that base
(bitsandbytes): can it run here, and what does it compute with.

bitsandbytes (0.46 and later) quantises and multiplies 4-bit weights on CPUs as well as CUDA GPUs
(and XPU, MPS, HPU, NPU: it lists them in ``bitsandbytes.supported_torch_devices``), so QLoRA is not
a GPU-only method. Two facts shape how downcycle uses it:

- A 4-bit linear layer computes with ``dequantize_4bit(packed, quant_state)`` (NF4 codes times the
  double-quantised block scales, in the compute dtype) multiplied by its input. Those dequantized
  weights, not the checkpoint's original ones, are what the adapters were trained against, so the
  merged export adds the LoRA delta to them (:func:`dequantized_weights`).
- On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit layer's weights into a bf16 layout
  the first time it runs in eval mode without gradients (for its fast inference kernel).
  Evaluation then computes in bf16, later training steps compute other gradients, and saving a
  checkpoint converts the layout back by re-quantising the block scales, which moves the frozen
  base (measured with bitsandbytes 0.50.2 on the shipped reference: after one validation pass and
  a save, a q_proj weight moved by up to 8.6e-4 and a LoRA gradient by 0.044).
  :func:`keep_training_numerics` turns that repacking off, so validation, training and the saved
  state all use the one NF4 base that was loaded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import DowncycleError
from ...recipe import TrainConfig
from .lora import LoraMethod

__all__ = ["QLoraMethod", "check_quant_state", "dequantized_weights", "keep_training_numerics", "quant_state_keys",
           "quiet_bitsandbytes", "release_checkpoint_file", "require_bitsandbytes"]

INSTALL = "pip install 'downcycle[qlora]'"
# bitsandbytes logs this at import on AVX512-BF16 CPUs when the optional `kernels` package (which
# fetches a compiled kernel from the Hugging Face Hub) is absent. That kernel serves only the
# eval-mode repacked path that keep_training_numerics disables, so it is noise for downcycle.
_KERNELS_HINT = "gemm_4bit_forward from kernels-community"


class _DropKernelsHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _KERNELS_HINT not in record.getMessage()


@contextlib.contextmanager
def quiet_bitsandbytes() -> Iterator[None]:
    """Hide bitsandbytes' import-time hint about the ``kernels`` package (see ``_KERNELS_HINT``).

    Use it around the first import of bitsandbytes (peft imports it too, when it is installed).
    """
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    hint = _DropKernelsHint()
    logger.addFilter(hint)
    try:
        yield
    finally:
        logger.removeFilter(hint)


def require_bitsandbytes(device_type: str) -> str:
    """Check that bitsandbytes can hold and multiply a 4-bit NF4 weight on ``device_type``; its version.

    Raises:
        DowncycleError: naming what to install, when bitsandbytes is missing, too old for the
            installed transformers, or has no 4-bit support for this device.
    """
    try:
        with quiet_bitsandbytes():
            import bitsandbytes
    except ImportError:
        raise DowncycleError(f"--method qlora needs bitsandbytes: {INSTALL}") from None
    import torch
    import transformers
    from transformers.utils import is_bitsandbytes_available

    version = getattr(bitsandbytes, "__version__", "?")
    if not is_bitsandbytes_available():
        raise DowncycleError(f"--method qlora: bitsandbytes {version} is too old for transformers {transformers.__version__}; "
                             f"pip install -U bitsandbytes (or {INSTALL})")
    supported = sorted(getattr(bitsandbytes, "supported_torch_devices", {"cuda"}))
    if device_type not in supported:
        raise DowncycleError(f"--method qlora: bitsandbytes {version} has no 4-bit support on {device_type} (it supports "
                             f"{', '.join(supported)}); pip install -U bitsandbytes, or use --method lora")
    try:  # the native library can be missing for this platform even where the device is listed
        from bitsandbytes.functional import dequantize_4bit, quantize_4bit

        probe = torch.linspace(-1, 1, 128, device=device_type).reshape(2, 64)
        packed, state = quantize_4bit(probe, blocksize=64, quant_type="nf4")
        dequantize_4bit(packed, state)
    except Exception as e:  # noqa: BLE001 -- any failure here means 4-bit does not work on this device
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DowncycleError(f"--method qlora: bitsandbytes {version} cannot quantise to 4 bits on {device_type} ({reason}); "
                             "pip install -U bitsandbytes, or use --method lora") from None
    return version


def _linear4bit_modules(model: Any) -> Iterator[tuple[str, Any]]:
    import bitsandbytes as bnb

    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            yield name, module


def keep_training_numerics(model: Any) -> int:
    """Turn off bitsandbytes' eval-time bf16 repacking on CPUs (see the module docstring); how many
    4-bit layers the model has."""
    count = 0
    for _, module in _linear4bit_modules(model):
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
        count += 1
    return count


def release_checkpoint_file(model: Any) -> int:
    """Copy the CPU tensors that stayed unquantised (embeddings, norms, head) into the process's own
    memory; how many.

    transformers maps the safetensors file and leaves such tensors as views of that mapping; after a
    4-bit load every page of the file has been read (to quantise it), so while one view lives the
    whole full-precision checkpoint stays resident in this process. With the copies, the mapping
    is released: for a SmolLM2-135M-shaped model this took the resident memory after loading from
    901 to 604 MiB (benchmarks/bench_qlora.py measures the training run).
    """
    import bitsandbytes as bnb

    copied = 0
    # parameters() and buffers() yield a tied tensor (embeddings = head) once, so the tie is kept
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type == "cpu" and not isinstance(tensor, bnb.nn.Params4bit):
            tensor.data = tensor.data.clone()
            copied += 1
    return copied


def dequantized_weights(model: Any) -> dict[str, Any]:
    """``{parameter name: float32 weight}`` of every 4-bit linear layer, as the layer computes with it.

    Names are those of the plain model (peft's ``base_model.model.`` prefix and ``.base_layer``
    removed), e.g. ``model.layers.0.self_attn.q_proj.weight``.
    """
    from bitsandbytes.functional import dequantize_4bit

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = {}
    for name, module in _linear4bit_modules(base):
        weight = module.weight
        if getattr(weight.quant_state, "packing_format_for_cpu", False):  # defensive: keep_training_numerics prevents it
            raise DowncycleError(f"{name}: its 4-bit weight is in bitsandbytes' CPU inference layout; cannot merge it exactly")
        plain = name.removesuffix(".base_layer")
        out[f"{plain}.weight"] = dequantize_4bit(weight.data, weight.quant_state).float().cpu()
    return out


def quant_state_keys(model: Any) -> set[str]:
    """State-dict entries that are neither parameters nor buffers: a 4-bit layer's quantisation state
    (``...weight.absmax``, ``.quant_map``, ``.nested_absmax``, ``.quant_state.bitsandbytes__nf4``...).

    ``load_state_dict`` calls them unexpected: the loaded model re-creates them by quantising the source.
    """
    known = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return set(model.state_dict()) - known


def check_quant_state(model: Any, checkpoint_file: Path) -> None:
    """After a checkpoint was loaded without its quantisation state (see :func:`quant_state_keys`):
    the state it saved must equal the one the model has now, i.e. the 4-bit base was quantised from
    the same source weights; and the checkpoint must hold exactly the model's tensors.

    Raises:
        DowncycleError: naming the first tensor that is missing or differs.
    """
    import torch
    from safetensors import safe_open

    state = model.state_dict()
    with safe_open(str(checkpoint_file), framework="pt") as f:
        saved = set(f.keys())
        missing, unknown = sorted(set(state) - saved), sorted(saved - set(state))
        if missing or unknown:
            what = f"lacks {missing[0]}" if missing else f"holds {unknown[0]}, which the model has not"
            raise DowncycleError(f"{checkpoint_file}: {what} ({len(missing)} missing, {len(unknown)} unknown tensors); start a new run")
        for key in sorted(quant_state_keys(model)):
            if not torch.equal(f.get_tensor(key), state[key].detach().cpu()):
                raise DowncycleError(f"{checkpoint_file}: {key} differs from the 4-bit base quantised now: "
                                     "the model changed since the checkpoint was saved; start a new run")


class QLoraMethod(LoraMethod):
    """QLoRA: a 4-bit NF4 base (bitsandbytes) with LoRA adapters on top (Dettmers et al., 2023), on
    any device bitsandbytes supports (CUDA GPUs and CPUs among them; see this module's docstring)."""

    name = "qlora"

    def check(self, config: TrainConfig, device: str) -> None:
        super().check(config, device)
        require_bitsandbytes(device.split(":")[0])

    def load(self, config: TrainConfig, path: str, device: str, precision: str) -> Any:
        from ...loading import load_model

        # Quantised from the float32 weights whatever the compute dtype: one 4-bit base for fp32 and
        # bf16 runs, and the tensors left unquantised (embeddings, norms, head) stay exact
        # (prepare_model_for_kbit_training would cast them to float32 anyway).
        compute = "bfloat16" if precision == "bf16" else "float32"
        with quiet_bitsandbytes():
            model = load_model(path, dtype="float32", compute_dtype=compute, device=device, trust_remote_code=config.trust_remote_code,
                               load_in_4bit=True)
        if keep_training_numerics(model) == 0:
            raise DowncycleError(f"--method qlora: no linear layer of {path} was quantised to 4 bits")
        release_checkpoint_file(model)
        return model

    def prepare(self, model: Any, config: TrainConfig) -> Any:
        from peft import prepare_model_for_kbit_training

        # Casts norms to float32 and enables input grads; checkpointing is the loop's decision.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return super().prepare(model, config)
