"""The strategy every training method is: load and prepare the model, compute the loss, and name the
inputs it adds to the run's manifest. :class:`Method` is the interface, with the defaults most methods
share (float32 master weights, the LM loss); full fine-tuning (:mod:`.full`), LoRA (:mod:`.lora`),
QLoRA (:mod:`.qlora`) and distillation (:mod:`.distill`) override parts.

Losses are returned as sums over predicted tokens with the token count and named parts, so the loop
can reduce sums across micro-batches and processes, divide once, and log every part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...recipe import TrainConfig
from ..losses.lm import LMLoss

__all__ = ["LossSums", "Method"]


@dataclass
class LossSums:
    """One micro-batch's losses: ``total`` (backpropagated) and named parts, all sums over ``tokens``."""

    total: Any
    tokens: int
    parts: dict[str, Any] = field(default_factory=dict)


class Method:
    """A training method: how the model is loaded and prepared, and what its loss is."""

    name: str  # the registry's name of the method (``--method``)
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
        from ...loading import load_model

        return load_model(path, dtype=self.base_dtype(precision), device=device, trust_remote_code=config.trust_remote_code)

    def prepare(self, model: Any, config: TrainConfig) -> Any:
        """Choose what trains (``requires_grad``), or wrap the model (adapters); returns the model to train."""
        raise NotImplementedError

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

