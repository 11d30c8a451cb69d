"""Full fine-tuning as a training method: every parameter trains, or only the decoder layers of
``--train-layers`` and the modules of ``--train-modules`` (distillation, :mod:`.distill`, trains the
same selection).
"""

from __future__ import annotations

from typing import Any

from ...errors import DowncycleError
from ...recipe import TrainConfig
from .base import Method

__all__ = ["FullMethod", "trainable_prefixes"]


class FullMethod(Method):
    """Full fine-tuning: every parameter trains, or only ``--train-layers`` + ``--train-modules``."""

    name = "full"

    def prepare(self, model: Any, config: TrainConfig) -> Any:
        if config.train_layers is None:
            if config.train_modules is not None:
                raise DowncycleError("--train-modules needs --train-layers (without it every parameter trains)")
            model.requires_grad_(True)
            return model
        prefixes = trainable_prefixes(model, config.train_layers, config.train_modules)
        # every name a parameter has: a tied head (``lm_head.weight``) is the embedding's tensor under a
        # second name, which named_parameters() leaves out; naming either trains the shared tensor
        chosen = {id(p) for name, p in model.named_parameters(remove_duplicate=False) if name.startswith(prefixes)}
        for param in model.parameters():
            param.requires_grad_(id(param) in chosen)
        return model


def trainable_prefixes(model: Any, layers_spec: str, modules: str | None) -> tuple[str, ...]:
    """Parameter-name prefixes of the selected decoder layers and extra modules.

    Raises:
        DowncycleError: for a malformed layer spec or a module name that matches no parameter.
    """
    from ...architecture import infer_layout
    from ...surgery.layerspec import parse_layers

    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]  # a tied head's name too
    layout = infer_layout(model.config.to_dict(), names)
    kept = parse_layers(layers_spec, layout.num_layers)
    prefixes = [f"{layout.prefix}{i}." for i in kept]
    for module in (m.strip() for m in (modules or "").split(",") if m.strip()):
        if not any(n == module or n.startswith(module + ".") for n in names):
            raise DowncycleError(f"--train-modules {module!r}: no parameter of this model is named {module}.*")
        prefixes.append(module + ".")
    return tuple(prefixes)
