"""The one training loop: setup, train, evaluate, save, resume. Methods are strategies.

Distribution is accelerate's job: run under ``accelerate launch`` or ``torchrun`` and the same code
does DDP, FSDP or DeepSpeed as accelerate's config says; nothing here branches on it. Losses are
sums of token NLLs reduced across micro-batches and processes, divided once by the token count.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from ..loading import resolve_device, resolve_precision
from ..recipe import TrainConfig, to_dict
from .batches import StepPlan, collate, eval_batches
from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from .logging import build_loggers, part_fields
from .methods import Method

__all__ = ["Trainer", "TrainingDiverged", "resolve_precision", "run_dir_for"]


class TrainingDiverged(DowncycleError):
    """The loss or gradient norm became NaN or infinite."""


def run_dir_for(out: Path) -> Path:
    """Where checkpoints and logs of an unfinished run live: ``OUT.run/`` beside ``OUT``."""
    out = Path(out)
    return out.parent / f"{out.name}.run"


class Trainer:
    """One training run. ``setup()``, then ``train()``; ``evaluate()`` at any time.

    Args:
        config: the run's settings (already merged with an axolotl file, if any).
        method: the strategy (see :mod:`downcycle.training.methods`).
        train_set, val_set: map-style datasets of ``{"input_ids": LongTensor (seq_len,)}``.
    """

    def __init__(self, config: TrainConfig, method: Method, train_set: Any, val_set: Any | None) -> None:
        self.config, self.method, self.train_set, self.val_set = config, method, train_set, val_set
        self.step, self.tokens, self.train_seconds = 0, 0, 0.0
        self.last_train_loss: float | None = None
        self.val_history: list[tuple[int, float]] = []
        self.notes: list[str] = []

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg = self.config
        probe = resolve_device(cfg.device)  # "cpu" or "cuda" (--device's choices); accelerate picks the GPU
        cpu = probe == "cpu"
        self.precision = resolve_precision(cfg.precision, probe)
        if self.precision == "bf16" and probe == "cuda" and not torch.cuda.is_bf16_supported():
            raise DowncycleError("--precision bf16: this GPU does not support bfloat16")
        self.method.check(cfg, probe)
        self.run_dir = run_dir_for(cfg.out)
        self.ckpt_root = self.run_dir / "checkpoints"
        if not cfg.resume and not cfg.force and latest_checkpoint(self.ckpt_root) is not None:  # before any loading: fail fast
            raise DowncycleError(f"{self.run_dir}: an earlier run left its checkpoints here; pass --resume to continue it or --force to start over")
        mixed = "bf16" if self.precision == "bf16" else "no"
        from accelerate.state import AcceleratorState

        if AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
            # An earlier run in this process used the other precision; accelerate keeps one state per
            # process and refuses to change it. Its process group (PartialState) is kept.
            AcceleratorState._reset_state()
        self.acc = Accelerator(cpu=cpu, mixed_precision=mixed)
        set_seed(cfg.seed)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.seq_len = int(self.train_set[0]["input_ids"].shape[0])
        if self.seq_len < 2:
            raise DowncycleError("packed sequences must hold at least 2 tokens")
        self.plan = StepPlan(len(self.train_set), cfg.micro_batch, cfg.grad_accum, self.world, cfg.seed)
        self.total_steps = self._total_steps()
        self.eval_every = (max(1, self.plan.steps_per_epoch // cfg.evals_per_epoch) if cfg.evals_per_epoch else cfg.eval_every)

        model = self.method.load(cfg, str(cfg.model), str(self.acc.device), self.precision)
        model = self.method.prepare(model, cfg)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        self.method.setup(cfg, self.acc.device)
        from .optim import build_optimizer, build_scheduler, resolve_optimizer

        optimizer_name, note = resolve_optimizer(cfg.optimizer, self.acc.device.type)
        if note:
            self.notes.append(note)
        optimizer = build_optimizer(optimizer_name, list(model.parameters()), cfg.lr, cfg.weight_decay)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        note = self.method.configure_lm_loss(self.model, cfg, self.seq_len)
        if note:
            self.notes.append(note)
        # Not acc.prepare'd: accelerate would step it once per process per optimizer step.
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, cfg.warmup_steps, cfg.schedule)
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.total_params = sum(p.numel() for p in model.parameters())
        self._resume_or_start()

    def _total_steps(self) -> int:
        cfg, plan = self.config, self.plan
        per_step = plan.global_batch * self.seq_len
        if cfg.max_steps is not None:
            steps = cfg.max_steps
        elif cfg.max_tokens is not None:
            steps = math.ceil(cfg.max_tokens / per_step)
        else:
            steps = max(1, round(cfg.epochs * plan.steps_per_epoch))
        if steps < 1:
            raise DowncycleError("the run would take no optimizer step (check --max-steps/--max-tokens/--epochs)")
        return steps

    def _resume_or_start(self) -> None:
        cfg, found = self.config, latest_checkpoint(self.ckpt_root)
        resume_step = None
        if cfg.resume and found is not None:
            state = load_checkpoint(self.acc, found[1], self._config_record(), self.world, self.model)
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self.tokens, self.train_seconds = state["step"], state["tokens"], state["train_seconds"]
            self.val_history = [tuple(v) for v in state["val_history"]]
            resume_step = self.step
            self.notes.append(f"resumed from {found[1]} (step {self.step} of {self.total_steps})")
        elif cfg.resume:  # run_train refuses this before any loading; a Trainer used directly gets the same answer
            raise DowncycleError(f"--resume: no checkpoint in {self.ckpt_root}")
        if not cfg.resume and self.acc.is_main_process:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logger = build_loggers(self.run_dir, self.acc.is_main_process, resume_step if cfg.resume else None)

    def _config_record(self) -> dict[str, Any]:
        return to_dict(self.config)

    # ---------------------------------------------------------------- train
    def train(self) -> None:
        """Run optimizer steps until the budget is spent; checkpoint, evaluate and log on the way."""
        import torch

        cfg, acc = self.config, self.acc
        tokens_per_rank_step = cfg.micro_batch * cfg.grad_accum * (self.seq_len - 1)
        if self.step == 0 and not self.val_history:
            self._validate()
        bar = self._progress()
        while self.step < self.total_steps:
            start = time.perf_counter()
            tokens, sums = 0, {}  # predicted tokens; "loss" (the objective) and the method's named parts, summed
            micro = self.plan.micro_batches(self.step, self.rank)
            for i, indices in enumerate(micro):
                batch = collate(self.train_set, indices, acc.device)
                # Gradients are all-reduced once, on the last micro-batch of the step.
                sync = contextlib.nullcontext() if i == len(micro) - 1 else acc.no_sync(self.model)
                with sync, acc.autocast():
                    out = self.method.loss(self.model, batch)
                    # Per-process mean over its tokens; DDP averages processes -> the global mean.
                    acc.backward(out.total / tokens_per_rank_step)
                tokens += out.tokens
                for name, value in {"loss": out.total, **out.parts}.items():
                    sums[name] = sums.get(name, 0.0) + value.detach().double()
            # Every process's method names the same parts, so one vector reduces them all.
            total = acc.reduce(torch.stack([torch.tensor(float(tokens), dtype=torch.float64, device=acc.device),
                                            *(torch.as_tensor(v, dtype=torch.float64, device=acc.device) for v in sums.values())]),
                               reduction="sum")
            means = {name: (total[i + 1] / total[0]).item() for i, name in enumerate(sums)}
            loss = means.pop("loss")
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
            norm = None if grad_norm is None else float(grad_norm)
            if not math.isfinite(loss) or (norm is not None and not math.isfinite(norm)):
                self._diverged(loss, norm)
            self.optimizer.step()
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.tokens += self.plan.global_batch * self.seq_len
            self.train_seconds += time.perf_counter() - start
            self.last_train_loss = loss
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                record = {"step": self.step, "split": "train", "tokens": self.tokens, "loss": loss, "lr": lr,
                          "tokens_per_s": self.tokens_per_second}
                if norm is not None:
                    record["grad_norm"] = norm
                record.update(part_fields(means))
                self.logger.log(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{self.tokens_per_second:,.0f}", refresh=False)
            if (self.eval_every and self.step % self.eval_every == 0) or self.step == self.total_steps:
                self._validate()
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total_steps:
                self.save_checkpoint()
        bar.close()

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    def _progress(self) -> Any:
        from ..progress import progress_bar

        return progress_bar(total=self.total_steps, initial=self.step, unit="step", desc=f"train ({self.method.name})",
                            disable=not (self.config.progress and self.acc.is_main_process), dynamic_ncols=True)

    def _diverged(self, loss: float, norm: float | None) -> None:
        self.logger.close()
        found = latest_checkpoint(self.ckpt_root)
        kept = (f"the last good checkpoint (step {found[0]}) is kept in {found[1]}; lower --lr and rerun with --resume"
                if found else f"no checkpoint was saved yet (set --save-every); logs are in {self.run_dir}")
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
        raise TrainingDiverged(f"training stopped at step {self.step + 1}: {what} is not finite; {kept}")

    def save_checkpoint(self) -> Path:
        state = {"step": self.step, "tokens": self.tokens, "train_seconds": self.train_seconds,
                 "scheduler": self.scheduler.state_dict(), "val_history": self.val_history,
                 "world_size": self.world, "global_batch": self.plan.global_batch, "config": self._config_record()}
        return save_checkpoint(self.acc, self.ckpt_root, self.step, state, self.config.keep_checkpoints)

    # ---------------------------------------------------------------- evaluate
    def evaluate(self) -> float | None:
        """Mean validation NLL per token (the LM loss, whatever the method), reduced over processes."""
        import torch

        if self.val_set is None:
            return None
        was_training = self.model.training
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.acc.device)  # nll, tokens
        with torch.no_grad(), self.acc.autocast():
            for indices in eval_batches(len(self.val_set), self.config.micro_batch, self.rank, self.world, self.config.eval_max_seqs):
                batch = collate(self.val_set, indices, self.acc.device)
                nll, tokens = self.method.lm_loss(self.model, batch)
                sums += torch.tensor([nll.item(), float(tokens)], dtype=torch.float64, device=self.acc.device)
        self.model.train(was_training)
        total = self.acc.reduce(sums, reduction="sum")
        return (total[0] / total[1]).item() if total[1] > 0 else None

    def _validate(self) -> None:
        loss = self.evaluate()
        if loss is not None:
            self.val_history.append((self.step, loss))
            self.logger.log({"step": self.step, "split": "val", "tokens": self.tokens, "loss": loss})
