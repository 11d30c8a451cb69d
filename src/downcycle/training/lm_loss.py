"""The LM loss of a training step: the model's own logits, or its output layer and cross-entropy run
a chunk of positions at a time (``--lm-loss``), so that a large vocabulary's logits are never held
whole. Every training method's LM term goes through :class:`LMLoss`.
"""

from __future__ import annotations

from typing import Any

from ..errors import DowncycleError
from ..output_layer import split_head
from ..recipe import TrainConfig
from .losses import chunked_lm_loss_sum, lm_loss_sum

__all__ = ["AUTO_CHUNK_FROM_BYTES", "CHUNK_BYTES", "LMLoss", "forward_logits", "split_head"]

# --lm-loss: float32 logits per chunk, and (auto) the micro-batch logits size from which to chunk
CHUNK_BYTES = 64 * 2**20
AUTO_CHUNK_FROM_BYTES = 2**30


def forward_logits(model: Any, batch: dict[str, Any]) -> Any:
    """``(B, T-1, V)`` logits of the positions of ``batch["input_ids"]`` ``(B, T)`` that have a next token.

    Models that accept ``logits_to_keep`` (most transformers causal LMs) apply the LM head to those
    ``T-1`` positions only, so the logits come out contiguous: no copy of the largest activation
    (and its gradient) to drop the last position, and ``1/T`` less head compute.
    """
    import torch

    ids = batch["input_ids"]
    if _accepts_logits_to_keep(model):
        keep = torch.arange(ids.shape[1] - 1, device=ids.device)
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits
        if logits.shape[1] == ids.shape[1] - 1:
            return logits
    else:
        logits = model(input_ids=ids, use_cache=False).logits
    return logits[:, :-1]


_LOGITS_TO_KEEP: dict[type, bool] = {}


def _accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    inner = getattr(model, "module", model)  # DDP / DeepSpeed wrappers
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft
    cls = type(inner)
    if cls not in _LOGITS_TO_KEEP:
        try:
            _LOGITS_TO_KEEP[cls] = "logits_to_keep" in inspect.signature(inner.forward).parameters
        except (TypeError, ValueError):
            _LOGITS_TO_KEEP[cls] = False
    return _LOGITS_TO_KEEP[cls]


class LMLoss:
    """Summed next-token NLL of a batch: through the model's logits (full), or through the body's hidden
    states and a chunked output layer + cross-entropy, as :meth:`configure` decides."""

    def __init__(self) -> None:
        self._head: tuple[Any, Any, int] | None = None  # (body, output layer, rows per chunk)

    def configure(self, model: Any, config: TrainConfig, seq_len: int) -> str | None:
        """Choose how the LM loss is computed (``--lm-loss``); returns a note for the run's output.

        Raises:
            DowncycleError: ``--lm-loss chunked`` on a model or method it cannot serve.
        """
        self._head = None
        if config.lm_loss == "full":
            return None
        split = split_head(model)
        if isinstance(split, str):
            if config.lm_loss == "chunked":
                raise DowncycleError(f"--lm-loss chunked: {split}; use --lm-loss full")
            return None
        body, head = split
        vocab = head.out_features
        logits_bytes = config.micro_batch * (seq_len - 1) * vocab * 4
        if config.lm_loss == "auto" and logits_bytes < AUTO_CHUNK_FROM_BYTES:
            return None
        rows = max(1, CHUNK_BYTES // (vocab * 4))
        self._head = (body, head, rows)
        if not self._agrees(model, vocab, head.weight.device):
            if config.lm_loss == "chunked":
                raise DowncycleError("--lm-loss chunked: this model's loss is not its body's hidden states through its output "
                                     "layer (a probe gave a different loss); use --lm-loss full")
            self._head = None  # auto: a head this check does not know; the model's own loss it is
            return None
        return (f"LM loss chunked: the output layer and cross-entropy run a chunk of positions at a time "
                f"(a micro-batch's float32 logits would take {logits_bytes / 2**30:.1f} GiB)")

    def __call__(self, model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
        """Summed next-token NLL of ``batch`` and the number of predicted tokens."""
        ids = batch["input_ids"]
        if self._head is None:
            return lm_loss_sum(forward_logits(model, batch), ids)
        body, head, rows = self._head
        hidden = body(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
        nll = chunked_lm_loss_sum(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias, ids[:, 1:].reshape(-1), rows)
        return nll, ids.shape[0] * (ids.shape[1] - 1)

    def _agrees(self, model: Any, vocab: int, device: Any) -> bool:
        """Whether the chunked loss equals the model's own on a probe sequence (eval mode, no grad; the
        probe's tokens come from a private generator, so no RNG state is touched)."""
        import torch

        probe = {"input_ids": torch.randint(0, vocab, (1, 32), generator=torch.Generator().manual_seed(0)).to(device)}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                want, _ = lm_loss_sum(forward_logits(model, probe), probe["input_ids"])
                got, _ = self(model, probe)
        finally:
            model.train(was_training)
        return bool(torch.isclose(got, want, rtol=1e-4, atol=1e-3))
