"""Distillation as a training method: the student learns the teacher's distribution, mixed with the
LM loss, on whole logits or a chunk of positions at a time (:mod:`..losses.distill_chunked`). The method loads the
teacher, checks it against the student before either is loaded, and records it in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import DowncycleError
from ...recipe import TrainConfig
from ..losses.kl import get_distill_loss
from ..losses.lm import forward_logits, lm_loss_sum
from .base import LossSums
from .full import FullMethod

__all__ = ["DistillMethod"]


class DistillMethod(FullMethod):
    """Distillation from a teacher: ``(1 - alpha) * LM loss + alpha * T^2 * KL(teacher^T || student^T)``."""

    name = "distill"

    def __init__(self) -> None:
        super().__init__()
        self.teacher: Any = None
        self.kd: Any = None
        self.alpha = 0.5
        self.temperature = 1.0
        # Leading logits the KL compares when the teacher's and student's embeddings are padded to
        # different sizes over one tokenizer (see downcycle.compat.check_distill); None: equal sizes.
        self.shared_vocab: int | None = None
        self.chunked: Any = None  # a ChunkedDistill when configure_lm_loss chose it (see losses.distill_chunked)
        self.teacher_path: Path | None = None  # the teacher's local directory (a hub id resolved)

    def check(self, config: TrainConfig, device: str) -> None:
        if config.teacher is None:
            raise DowncycleError("--method distill needs --teacher MODEL (the uncut reference)")
        get_distill_loss(config.distill_loss)

    def check_inputs(self, config: TrainConfig, source: Path, model_config: dict[str, Any], seq_len: int | None = None) -> list[str]:
        """The teacher's vocabulary against the student's, and its positions against the corpus's
        sequences, from their files, before either model is loaded."""
        from ...compat import check_distill, check_positions
        from ...loading import check_weights, read_config, resolve_source

        if config.teacher is None:
            return []  # check() refuses it
        self.teacher_path = resolve_source(config.teacher)
        teacher_config = read_config(self.teacher_path)
        vocab = check_distill(source, model_config, self.teacher_path, teacher_config)
        check_weights(self.teacher_path)
        if seq_len is not None:
            check_positions(f"{config.data}: seq_len", seq_len, self.teacher_path, teacher_config,
                            "build the corpus with --seq-len {limit} or less", name=f"--teacher {self.teacher_path}")
        self.shared_vocab = vocab.shared
        return vocab.notes

    def inputs(self, config: TrainConfig) -> dict[str, Any]:
        """The teacher as given, its directory, and the hashes of its config and safetensors headers."""
        from ...loading import resolve_source
        from ..export import source_inputs

        if config.teacher is None:
            return {}
        path = self.teacher_path or resolve_source(config.teacher)
        return {"teacher": {"source": config.teacher, **source_inputs(path)}}

    def setup(self, config: TrainConfig, device: Any) -> None:
        from ...loading import load_model, read_config, resolve_source

        path = self.teacher_path = resolve_source(config.teacher)
        read_config(path)
        self.teacher = load_model(path, dtype=config.teacher_dtype, device=str(config.teacher_device or device),
                                  trust_remote_code=config.trust_remote_code)
        self.teacher.requires_grad_(False)
        self.kd = get_distill_loss(config.distill_loss)
        self.alpha, self.temperature = config.distill_alpha, config.distill_temperature

    def attach(self, teacher: Any, loss: str = "forward_kl", alpha: float = 0.5, temperature: float = 1.0,
               shared_vocab: int | None = None) -> None:
        """Use an in-memory ``teacher`` (for tests and notebooks) instead of loading one."""
        self.teacher, self.kd, self.alpha, self.temperature = teacher.eval().requires_grad_(False), get_distill_loss(loss), alpha, temperature
        self.shared_vocab = shared_vocab

    def configure_lm_loss(self, model: Any, config: TrainConfig, seq_len: int) -> str | None:
        """Distill a chunk of positions at a time (:mod:`..losses.distill_chunked`) unless ``--lm-loss full``, or
        a model of the pair is not its body through a linear layer (then ``chunked`` is an error)."""
        from ..losses.distill_chunked import ChunkedDistill

        self.chunked = None
        if config.lm_loss == "full":
            return None
        chunked = ChunkedDistill.build(model, self.teacher, self.kd, self.temperature, self.alpha, self.shared_vocab)
        why = chunked if isinstance(chunked, str) else chunked.probe_disagrees(model, lambda probe: self.loss(model, probe).total)
        if why is not None:
            if config.lm_loss == "chunked":
                raise DowncycleError(f"--lm-loss chunked: distillation needs both models' logits as their body's hidden states "
                                     f"through a linear layer, but {why}; use --lm-loss full")
            return None
        self.chunked = chunked
        note = super().configure_lm_loss(model, config, seq_len)  # validation's LM loss
        return "; ".join(n for n in ("distillation chunked: the output layers, LM loss and KL run a chunk of positions at a time", note) if n)

    def loss(self, model: Any, batch: dict[str, Any]) -> LossSums:
        import torch

        if self.chunked is not None:
            total, nll, kl, tokens = self.chunked(batch)
            return LossSums(total, tokens, {"lm": nll, "kl": kl})
        logits = forward_logits(model, batch)  # (B, T, V)
        nll, tokens = lm_loss_sum(logits, batch["input_ids"])
        teacher_device = next(self.teacher.parameters()).device
        with torch.inference_mode():
            t_logits = forward_logits(self.teacher, {"input_ids": batch["input_ids"].to(teacher_device)}).to(logits.device)
        s_logits = logits
        if t_logits.shape != logits.shape:
            vocab = self.shared_vocab
            if vocab is None or t_logits.shape[:-1] != logits.shape[:-1] or vocab > min(t_logits.shape[-1], logits.shape[-1]):
                raise DowncycleError(f"teacher and student disagree on the vocabulary ({t_logits.shape[-1]} vs {logits.shape[-1]} logits)")
            s_logits, t_logits = logits[..., :vocab], t_logits[..., :vocab]  # padding rows beyond the tokenizer's ids: left out
        vocab = s_logits.shape[-1]
        # The same B*(T-1) positions as the LM loss, so both terms are sums over the same tokens.
        kl = self.kd(s_logits.reshape(-1, vocab), t_logits.reshape(-1, vocab), self.temperature)
        total = (1.0 - self.alpha) * nll + self.alpha * kl
        return LossSums(total, tokens, {"lm": nll.detach(), "kl": kl.detach()})
