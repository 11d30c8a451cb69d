"""The model as a skeleton: its modules built with every parameter on the meta device (buffers such
as rotary frequencies computed for real, as ``transformers`` computes them), what lies outside the
decoder layers loaded from the checkpoint, and each decoder layer materialised from the memory-mapped
safetensors files only while it runs, then released.

Peak memory is then the largest layer plus the embeddings, the final norm and the head, plus the
states between layers (:mod:`.store`), whatever the depth of the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DowncycleError

__all__ = ["LayerwiseModel", "open_layerwise"]


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside this block is moved to the meta device as it is registered
    (no memory, no initialisation cost); buffers stay where their module computed them."""
    import torch

    register = torch.nn.Module.register_parameter

    def on_meta(module: Any, name: str, param: Any) -> None:
        register(module, name, param)
        p = module._parameters.get(name)
        if p is not None and p.device.type != "meta":
            module._parameters[name] = torch.nn.Parameter(p.to("meta"), requires_grad=False)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


@dataclass
class LayerwiseModel:
    """A causal LM whose decoder layers live on disk until :meth:`materialise` loads one.

    Attributes:
        model: the ``transformers`` model (layers on the meta device unless materialised).
        layers: its decoder layers (``nn.ModuleList``).
        source: the checkpoint directory; prefix: the layers' tensor-name prefix (``model.layers.``).
        dtype, device: what every loaded tensor is cast and moved to.
    """

    model: Any
    layers: Any
    source: Path
    prefix: str
    dtype: Any
    device: Any
    _files: dict[str, str] = field(default_factory=dict, repr=False)  # tensor name -> file
    _layer_names: dict[int, tuple[str, ...]] = field(default_factory=dict, repr=False)
    loaded_bytes: int = 0  # the most bytes of layer weights held at once (for the memory report)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _tensors(self, names: list[str] | tuple[str, ...]) -> dict[str, Any]:
        from safetensors import safe_open

        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self._files[name], []).append(name)
        out = {}
        for file, group in by_file.items():
            with safe_open(str(self.source / file), framework="pt", device="cpu") as f:
                for name in group:
                    out[name] = f.get_tensor(name).to(device=self.device, dtype=self.dtype)
        return out

    def materialise(self, index: int) -> Any:
        """Layer ``index`` with its weights loaded (every tensor of the layer, no more, no fewer)."""
        start = f"{self.prefix}{index}."
        state = {name[len(start):]: t for name, t in self._tensors(self._layer_names[index]).items()}
        layer = self.layers[index]
        try:
            layer.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise DowncycleError(f"{self.source}: layer {index}'s tensors are not its module's parameters "
                                 f"({str(e).splitlines()[0]}): this family cannot run layer by layer") from None
        self.loaded_bytes = max(self.loaded_bytes, sum(t.numel() * t.element_size() for t in state.values()))
        return layer

    def release(self, index: int) -> None:
        """Layer ``index``'s parameters back to the meta device (their memory freed)."""
        import torch

        for module in self.layers[index].modules():
            for name, p in module._parameters.items():
                if p is not None and p.device.type != "meta":
                    module._parameters[name] = torch.nn.Parameter(p.to("meta"), requires_grad=False)


def open_layerwise(source: str | Path, *, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False) -> LayerwiseModel:
    """The skeleton of the checkpoint in ``source`` (a local directory of safetensors files): every
    tensor outside the decoder layers loaded, the layers on the meta device.

    Raises:
        DowncycleError: weights that are not safetensors, a checkpoint whose tensors are not the
            model's parameters by name (then this family cannot run layer by layer), no layer list.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..architecture import infer_layout
    from ..checkpoint.safetensors_index import open_checkpoint
    from ..decoder import find_decoder_layers
    from ..loading import check_weights, read_config

    src = Path(source)
    check_weights(src)
    ckpt = open_checkpoint(src)
    layout = infer_layout(read_config(src), list(ckpt.tensors))
    torch_dtype = getattr(torch, dtype) if dtype != "auto" else None
    config = AutoConfig.from_pretrained(str(src), trust_remote_code=trust_remote_code)
    with _parameters_on_meta():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code, **({"dtype": torch_dtype} if torch_dtype else {}))
    model.eval()
    if torch_dtype is None:  # "auto": as stored (the first floating tensor's dtype)
        torch_dtype = next(getattr(torch, {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[e.dtype])
                           for e in ckpt.tensors.values() if e.dtype in ("F32", "BF16", "F16"))
    _, layers = find_decoder_layers(model)
    if len(layers) != layout.num_layers:
        raise DowncycleError(f"{src}: the model has {len(layers)} decoder layers, the checkpoint {layout.num_layers}")
    lw = LayerwiseModel(model, layers, src, layout.prefix, torch_dtype, torch.device(device),
                        {name: e.file for name, e in ckpt.tensors.items()}, dict(layout.layers))
    tensors = lw._tensors(list(layout.others))
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    if unexpected:  # a name transformers renames on load (GPT-NeoX's embed_out is its lm_head): paired by shape, if unambiguous
        params = dict(model.named_parameters())
        free = [k for k in missing if not k.startswith(layout.prefix) and params[k].device.type == "meta"]
        renamed = {}
        for name in unexpected:
            match = [k for k in free if tuple(params[k].shape) == tuple(tensors[name].shape) and k not in renamed.values()]
            if len(match) != 1:
                raise DowncycleError(f"{src}: tensor {name} is no parameter of the model"
                                     + (f" (it could be any of {', '.join(match)})" if match else "")
                                     + ": this family cannot run layer by layer")
            renamed[name] = match[0]
        model.load_state_dict({renamed[k]: tensors[k] for k in renamed}, strict=False, assign=True)
    if layout.tied_embeddings:
        model.tie_weights()
    left = [n for n, p in model.named_parameters() if p.device.type == "meta" and not n.startswith(layout.prefix)]
    if left:
        raise DowncycleError(f"{src}: parameters outside the decoder layers missing from the checkpoint ({', '.join(left[:3])})")
    for name, b in model.named_buffers():  # rotary frequencies and the like: computed at construction, on the cpu
        if b is not None and b.device != lw.device and not name.startswith(layout.prefix):
            model.get_submodule(name.rpartition(".")[0] or "")._buffers[name.rpartition(".")[2]] = b.to(lw.device)
    return lw
