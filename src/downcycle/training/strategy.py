"""The strategy every training method is: load and prepare the model, compute the loss, and name the
inputs it adds to the run's manifest. :class:`Method` itself is full fine-tuning (every parameter, or
``--train-layers`` + ``--train-modules``); the others (:mod:`.methods`, :mod:`.distill`) override parts.

Losses are returned as sums over predicted tokens with the token count and named parts, so the loop
can reduce sums across micro-batches and processes, divide once, and log every part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from ..recipe import TrainConfig
from .lm_loss import LMLoss

__all__ = ["FullMethod", "LossSums", "Method", "trainable_prefixes"]


@dataclass
class LossSums:
    """One micro-batch's losses: ``total`` (backpropagated) and named parts, all sums over ``tokens``."""

    total: Any
    tokens: int
    parts: dict[str, Any] = field(default_factory=dict)


class Method:
    """Full fine-tuning: every parameter trains, or only ``--train-layers`` + ``--train-modules``."""

    name = "full"
    adapter = False  # True: the trained weights are a peft adapter, merged into the base on export

    def __init__(self) -> None:
        self.lm = LMLoss()

    def check(self, config: TrainConfig, device: str) -> None:
        """Refuse a configuration this method cannot run, before any loading."""

    def check_inputs(self, config: TrainConfig, source: Path, model_config: dict[str, Any], seq_len: int | None = None) -> list[str]:
        """Check, from their files and before anything loads, what this method reads besides the model
        in ``source`` (config.json ``model_config``) and the corpus (of ``seq_len``-token sequences);
        returns notes for the run's output."""
        return []

    def inputs(self, config: TrainConfig) -> dict[str, Any]:
        """The manifest's record of what this method read besides the model and the corpus (provenance)."""
        return {}

    def base_dtype(self, precision: str) -> str:
        # Trained weights stay float32 (the master copy); bf16 is autocast only.
        return "float32"

    def load(self, config: TrainConfig, path: str, device: str, precision: str) -> Any:
        from ..loading import load_model

        return load_model(path, dtype=self.base_dtype(precision), device=device, trust_remote_code=config.trust_remote_code)

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

    def setup(self, config: TrainConfig, device: Any) -> None:
        """Load what the loss needs besides the model (the teacher, for distillation)."""

    def configure_lm_loss(self, model: Any, config: TrainConfig, seq_len: int) -> str | None:
        """Choose how the LM loss is computed (``--lm-loss``, see :class:`LMLoss`); returns a note for the run's output."""
        return self.lm.configure(model, config, seq_len)

    def lm_loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
        """Summed next-token NLL of ``batch`` and the number of predicted tokens."""
        return self.lm(model, batch)

    def loss(self, model: Any, batch: dict[str, Any]) -> LossSums:
        nll, tokens = self.lm_loss(model, batch)
        return LossSums(nll, tokens, {"lm": nll.detach()})


FullMethod = Method


def trainable_prefixes(model: Any, layers_spec: str, modules: str | None) -> tuple[str, ...]:
    """Parameter-name prefixes of the selected decoder layers and extra modules.

    Raises:
        DowncycleError: for a malformed layer spec or a module name that matches no parameter.
    """
    from ..architecture import infer_layout
    from ..surgery.layerspec import parse_layers

    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]  # a tied head's name too
    layout = infer_layout(model.config.to_dict(), names)
    kept = parse_layers(layers_spec, layout.num_layers)
    prefixes = [f"{layout.prefix}{i}." for i in kept]
    for module in (m.strip() for m in (modules or "").split(",") if m.strip()):
        if not any(n == module or n.startswith(module + ".") for n in names):
            raise DowncycleError(f"--train-modules {module!r}: no parameter of this model is named {module}.*")
        prefixes.append(module + ".")
    return tuple(prefixes)
