"""One pass of calibration windows through the uncut reference, with the states healing needs
captured by hooks on the model's own modules (so every family's math runs as in ``transformers``):

- the hidden state *entering* a decoder layer (a forward pre-hook: the first positional argument or
  ``hidden_states=``), which is also the state leaving the layer before it;
- the last layer's output (the state the final norm receives);
- an MLP block's output (the ``X`` of linear replacement), before it is added to the residual stream;
- the arguments a layer was called with besides its input (position embeddings, masks; GPT-2 passes
  its mask positionally), so that a layer can be run alone on cached states exactly as the model runs it.

The forward stops after the deepest layer anything is needed from. A reference too large for memory
runs one decoder layer at a time instead (:mod:`.reference`), with the same states.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..architecture import MLP_OUTPUT_NORMS, MLP_SEGMENTS
from ..decoder import final_norm, find_decoder_layers, layer_input
from ..errors import DowncycleError

__all__ = ["Call", "Needs", "call_of", "capture", "down_projection", "final_norm_and_head", "mlp_module", "mlp_output_norm", "norm_offset"]


# A layer's call less its input: (the positional arguments after it, the keyword arguments); run it as
# ``layer(x, *call[0], **call[1])``.
Call = tuple[tuple, dict]


@dataclass
class Needs:
    """What to capture, by source layer index: ``inputs`` (every batch's), ``first`` (the first
    batch's only), ``mlp`` (the MLP block's output), ``calls_of`` (the layer's :data:`Call`);
    ``final``: the last layer's output."""

    inputs: set[int] = field(default_factory=set)
    mlp: set[int] = field(default_factory=set)
    calls_of: set[int] = field(default_factory=set)
    final: bool = False
    first: set[int] = field(default_factory=set)

    def deepest(self, num_layers: int) -> int:
        """The deepest layer anything is needed from (the forward stops after it)."""
        return num_layers - 1 if self.final else max([*self.inputs, *self.first, *self.mlp, *self.calls_of, 0])


class _Stop(Exception):
    """Raised by a hook once everything needed from a batch is captured."""


def _tensor(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output


def call_of(args: tuple, kwargs: dict) -> Call:
    """A layer's call as a pre-hook sees it, less its input (the first positional argument or
    ``hidden_states=``), tensors detached."""
    import torch

    def plain(v: Any) -> Any:
        return v.detach() if torch.is_tensor(v) else v

    return tuple(plain(v) for v in args[1:]), {k: plain(v) for k, v in kwargs.items() if k != "hidden_states"}


def mlp_module(layer: Any) -> tuple[str, Any]:
    """The feed-forward block of a decoder layer (its child named mlp, feed_forward or ffn)."""
    found = [(name, m) for name, m in layer.named_children() if name in MLP_SEGMENTS]
    if len(found) != 1:
        raise DowncycleError(f"{type(layer).__name__}: no single feed-forward block among its modules "
                             f"({', '.join(n for n, _ in layer.named_children())})")
    return found[0]


def mlp_output_norm(layer: Any) -> tuple[str, Any] | None:
    """The norm a decoder layer applies to its MLP's output before the residual add (Gemma 2/3's and
    OLMo 2's ``post_feedforward_layernorm``), or None where the MLP output joins the residual as is."""
    found = [(name, m) for name, m in layer.named_children() if name in MLP_OUTPUT_NORMS]
    return found[0] if len(found) == 1 else None


def norm_offset(norm: Any) -> float:
    """1.0 for a norm that scales by ``(1 + w)`` (Gemma's RMSNorm), 0.0 for one that scales by ``w``:
    what the module gives with its weight zeroed. A norm with a bias is refused (the fold is a scale)."""
    import torch

    if getattr(norm, "bias", None) is not None:
        raise DowncycleError(f"{type(norm).__name__}: the norm after the MLP has a bias; linear replacement folds only a scale")
    saved = norm.weight.data
    norm.weight.data = torch.zeros_like(saved)
    try:
        with torch.no_grad():
            out = norm(torch.ones(1, saved.shape[0], dtype=saved.dtype, device=saved.device))
    finally:
        norm.weight.data = saved
    return 0.0 if bool((out == 0).all()) else 1.0


def down_projection(mlp: Any, hidden: int) -> tuple[str, Any]:
    """The MLP's one linear map back to the residual width (``down_proj``, ``c_proj``, ``fc2``,
    ``dense_4h_to_h`` ...): its only ``nn.Linear``/``Conv1D`` child with ``hidden`` outputs."""
    import torch

    found = []
    for name, m in mlp.named_children():
        if type(m) is torch.nn.Linear and m.out_features == hidden or type(m).__name__ == "Conv1D" and getattr(m, "nf", None) == hidden:
            found.append((name, m))
    if len(found) != 1:
        raise DowncycleError(f"{type(mlp).__name__}: no single linear projection to the hidden size {hidden} "
                             "(a mixture of experts, or a fused block): linear replacement cannot fold into it")
    return found[0]


def final_norm_and_head(model: Any) -> tuple[Any, Any]:
    """The norm the last layer's output goes through and the output layer: the one norm module among
    the children of the module that holds the decoder layers, and ``get_output_embeddings()``."""
    from ..architecture import logit_transform

    norm, head = final_norm(model), model.get_output_embeddings()
    if head is None:
        raise DowncycleError(f"{type(model).__name__}: no output layer")
    transform = logit_transform(model.config.get_text_config())
    if transform:
        raise DowncycleError(f"{type(model).__name__}: its config transforms the logits ({transform}); the kl loss is refused")
    return norm, head


def capture(model: Any, windows: Any, batch_size: int, needs: Needs, progress: bool = False,
            desc: str = "calibration") -> Iterator[tuple[dict[str, Any], dict[int, Call]]]:
    """Run ``windows`` ((N, S) token ids, full-length: no padding) through ``model`` in batches of
    ``batch_size`` and yield, per batch, ``(states, calls)``: ``states`` holds ``("in", i)``,
    ``("mlp", i)`` and ``"final"`` tensors (float32, detached, on the model's device); ``calls``
    the :data:`Call` of every layer in ``needs.calls_of`` (the same for every batch: full windows of one length).
    """
    import torch

    from ..progress import progress_bar

    _, layers = find_decoder_layers(model)
    n = len(layers)
    deepest = needs.deepest(n)
    inputs = needs.inputs | needs.first
    states: dict[Any, Any] = {}
    calls: dict[int, Call] = {}
    handles = []

    def pre(i: int):
        def hook(module: Any, args: tuple, kw: dict) -> None:
            if i in inputs:
                states[("in", i)] = layer_input(args, kw).detach().float()
            if i in needs.calls_of:
                calls[i] = call_of(args, kw)
        return hook

    def post(i: int):
        def hook(module: Any, args: tuple, output: Any) -> None:
            if needs.final and i == n - 1:
                states["final"] = _tensor(output).detach().float()
            if i == deepest:
                raise _Stop
        return hook

    def mlp_hook(i: int):  # X: the MLP block's contribution to the residual (after its norm, where it has one)
        def hook(module: Any, args: tuple, output: Any) -> None:
            states[("mlp", i)] = _tensor(output).detach().float()
        return hook

    for i in sorted(inputs | needs.calls_of):
        handles.append(layers[i].register_forward_pre_hook(pre(i), with_kwargs=True))
    for i in sorted(needs.mlp):
        handles.append((mlp_output_norm(layers[i]) or mlp_module(layers[i]))[1].register_forward_hook(mlp_hook(i)))
    handles.append(layers[deepest].register_forward_hook(post(deepest)))  # deepest is n - 1 whenever final is needed
    device = next(model.parameters()).device
    batches = range(0, int(windows.shape[0]) - batch_size + 1, batch_size)  # full batches: one shape for cached kwargs
    try:
        with progress_bar(total=len(batches), desc=desc, unit="batch", disable=not progress, leave=False) as bar:
            for start in batches:
                states.clear()
                try:
                    with torch.no_grad():  # not inference_mode: cached states become training inputs; not around the yield
                        model(input_ids=windows[start:start + batch_size].to(device), use_cache=False)
                except _Stop:
                    pass
                yield dict(states), calls
                bar.update(1)
    finally:
        for h in handles:
            h.remove()
