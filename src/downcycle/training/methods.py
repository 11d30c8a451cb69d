"""Training methods as strategies: each loads and prepares the model and computes the loss.

The loop (:mod:`downcycle.training.loop`) is the same for all of them. A method decides which
parameters train (all, a selection of layers, or LoRA adapters), how the model is loaded (QLoRA: a
4-bit NF4 base) and what the loss is (the LM loss, or distillation from a teacher mixed with it).
Losses are returned as sums over predicted tokens with the token count, so the loop can reduce sums
across micro-batches and processes and divide once.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..architecture import MLP_SEGMENTS, is_mlp_module
from ..errors import DowncycleError
from ..recipe import TrainConfig
from .lm_loss import LMLoss, forward_logits
from .losses import get_distill_loss, lm_loss_sum

__all__ = ["METHODS", "DistillMethod", "FullMethod", "LoraMethod", "LossSums", "Method", "QLoraMethod", "get_method"]


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
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith(prefixes))
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

    names = [n for n, _ in model.named_parameters()]
    layout = infer_layout(model.config.to_dict(), names)
    kept = parse_layers(layers_spec, layout.num_layers)
    prefixes = [f"{layout.prefix}{i}." for i in kept]
    for module in (m.strip() for m in (modules or "").split(",") if m.strip()):
        if not any(n == module or n.startswith(module + ".") for n in names):
            raise DowncycleError(f"--train-modules {module!r}: no parameter of this model is named {module}.*")
        prefixes.append(module + ".")
    return tuple(prefixes)


def lora_target_modules(model: Any, targets: str) -> str | list[str]:
    """peft ``target_modules`` for ``--lora-targets``: ``all-linear``, ``mlp`` or a list of names."""
    if targets == "all-linear":
        return "all-linear"
    if targets == "mlp":
        import torch
        from transformers.pytorch_utils import Conv1D

        found = [name for name, mod in model.named_modules()
                 if isinstance(mod, (torch.nn.Linear, Conv1D)) and is_mlp_module(name)]
        if not found:
            raise DowncycleError(f"--lora-targets mlp: no linear layer under {'/'.join(MLP_SEGMENTS)} in this model")
        return found
    names = [t.strip() for t in targets.split(",") if t.strip()]
    module_names = [n for n, _ in model.named_modules()]
    for t in names:
        if not any(n == t or n.endswith("." + t) for n in module_names):
            raise DowncycleError(f"--lora-targets: no module of this model is named {t!r}")
    return names


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence the FutureWarning peft triggers by reading ``is_gradient_checkpointing`` (deprecated in
    transformers 5) whenever it wraps a model: not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        yield


class LoraMethod(Method):
    """LoRA through peft: the base is frozen, low-rank adapters train (Hu et al., 2021)."""

    name = "lora"
    adapter = True

    def check(self, config: TrainConfig, device: str) -> None:
        if config.train_layers is not None or config.train_modules is not None:
            raise DowncycleError(f"--train-layers/--train-modules apply to full and distill, not {self.name}")

    def base_dtype(self, precision: str) -> str:
        # The frozen base may be stored in bf16 when computing in bf16; the adapters stay float32.
        return "bfloat16" if precision == "bf16" else "float32"

    def prepare(self, model: Any, config: TrainConfig) -> Any:
        from .quantized import quiet_bitsandbytes

        with quiet_bitsandbytes():  # peft imports bitsandbytes, when installed
            from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=lora_target_modules(model, config.lora_targets), bias="none", task_type="CAUSAL_LM")
        with quiet_peft():
            return get_peft_model(model, lora)


class QLoraMethod(LoraMethod):
    """QLoRA: a 4-bit NF4 base (bitsandbytes) with LoRA adapters on top (Dettmers et al., 2023), on
    any device bitsandbytes supports (CUDA GPUs and CPUs among them; see :mod:`.quantized`)."""

    name = "qlora"

    def check(self, config: TrainConfig, device: str) -> None:
        from .quantized import require_bitsandbytes

        super().check(config, device)
        require_bitsandbytes(device.split(":")[0])

    def load(self, config: TrainConfig, path: str, device: str, precision: str) -> Any:
        from ..loading import load_model
        from .quantized import keep_training_numerics, quiet_bitsandbytes, release_checkpoint_file

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


class DistillMethod(Method):
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
        self.chunked: Any = None  # a ChunkedDistill when configure_lm_loss chose it (see distill_loss)

    def check(self, config: TrainConfig, device: str) -> None:
        if config.teacher is None:
            raise DowncycleError("--method distill needs --teacher MODEL (the uncut reference)")
        get_distill_loss(config.distill_loss)

    def setup(self, config: TrainConfig, device: Any) -> None:
        from ..loading import load_model, read_config, resolve_source

        path = resolve_source(config.teacher)
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
        """Distill a chunk of positions at a time (:mod:`.distill_loss`) unless ``--lm-loss full``, or
        a model of the pair is not its body through a linear layer (then ``chunked`` is an error)."""
        from .distill_loss import ChunkedDistill

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


# name -> strategy class (`downcycle ls` lists the names)
METHODS: dict[str, type[Method]] = {
    "full": FullMethod,
    "lora": LoraMethod,
    "qlora": QLoraMethod,
    "distill": DistillMethod,
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]()
    except KeyError:
        raise DowncycleError(f"--method {name!r}: unknown (known: {', '.join(METHODS)})") from None
