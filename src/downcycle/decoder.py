"""The decoder layers of a model loaded in memory, found generically, and layers skipped in place.

:mod:`downcycle.architecture` finds layers by tensor *names* in a checkpoint; this module finds the
same thing among the *modules* of a loaded ``transformers`` model: the ``nn.ModuleList`` whose length
is the text config's layer count (``model.layers``, ``transformer.h``, ``gpt_neox.layers``,
``model.language_model.layers`` ...). Ties between towers are broken with the same hints as the
checkpoint inference, never with a per-family name. Also here: which forward argument takes the
model's KV cache (:func:`cache_argument`), for the loops that feed one token at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .architecture import LAYER_COUNT_KEYS, NON_TEXT_HINTS, layer_count, loaded_text_config
from .errors import DowncycleError

__all__ = ["cache_argument", "final_norm", "find_decoder_layers", "layer_input", "num_decoder_layers", "skip_layers", "with_layer_input"]


def num_decoder_layers(model: Any) -> int:
    """The decoder's layer count from the model's (text) config."""
    try:
        return layer_count(loaded_text_config(model.config))[1]
    except DowncycleError:
        raise DowncycleError(f"{type(model).__name__}: its config has no layer count ({' / '.join(LAYER_COUNT_KEYS)})") from None


def find_decoder_layers(model: Any) -> tuple[str, Any]:
    """The qualified name and the ``nn.ModuleList`` of ``model``'s decoder layers.

    Raises:
        DowncycleError: if no module list, or more than one outside vision/audio/encoder towers,
            has exactly as many entries as the config has layers.
    """
    import torch

    n = num_decoder_layers(model)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n]
    if len(found) > 1:
        textual = [(name, m) for name, m in found if not any(h in name.lower() for h in NON_TEXT_HINTS)]
        found = textual or found
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ambiguous ({', '.join(name for name, _ in found)})"
        raise DowncycleError(f"{type(model).__name__}: {what} list of {n} decoder layers found among its modules")
    return found[0]


def layer_input(args: tuple, kwargs: dict) -> Any:
    """The hidden state a decoder layer was called with: its first positional argument, or the
    ``hidden_states`` keyword (every transformers decoder layer takes it one way or the other)."""
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise DowncycleError("a decoder layer was called without a hidden state (neither positionally nor as hidden_states=)")


def with_layer_input(args: tuple, kwargs: dict, hidden: Any) -> tuple[tuple, dict]:
    """A decoder layer's call arguments with its hidden state replaced by ``hidden`` (where
    :func:`layer_input` finds it), for a forward pre-hook to return."""
    layer_input(args, kwargs)  # the same check
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


@contextmanager
def skip_layers(layers: Sequence[Any], indices: Sequence[int], tuple_outputs: bool = False) -> Iterator[None]:
    """Within the block, the layers at ``indices`` return their input unchanged (removed, in effect).

    The module list keeps its length, so per-layer config entries (attention types, cache slots)
    still line up with the remaining layers exactly as in a cut checkpoint. Skipping replaces the
    instance's ``forward`` (``nn.Module.__call__`` dispatches to it), so hooks still fire.

    Args:
        layers: the decoder layer list from :func:`find_decoder_layers`.
        indices: the layers to skip.
        tuple_outputs: whether these layers return tuples (older transformers) rather than tensors.
    """

    def identity(*args: Any, **kwargs: Any) -> Any:
        hidden = layer_input(args, kwargs)
        return (hidden,) if tuple_outputs else hidden

    patched = [layers[i] for i in indices]
    for layer in patched:
        layer.forward = identity
    try:
        yield
    finally:
        for layer in patched:
            del layer.forward


def cache_argument(model: Any) -> str:
    """The forward argument taking a KV cache: ``cache`` in recent transformers, ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def final_norm(model: Any) -> Any:
    """The norm the last decoder layer's output goes through before the output layer: the one norm
    module among the children of the module that holds the decoder layers (``model.norm``,
    ``transformer.ln_f``, ``gpt_neox.final_layer_norm`` ...)."""
    name, _ = find_decoder_layers(model)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    norms = [m for n, m in parent.named_children() if "norm" in type(m).__name__.lower() or "norm" in n.lower() or n == "ln_f"]
    if len(norms) != 1:
        raise DowncycleError(f"{type(model).__name__}: no single final norm beside the decoder layers")
    return norms[0]
