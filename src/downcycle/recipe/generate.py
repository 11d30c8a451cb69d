"""Config of `downcycle generate`: sample a continuation of one prompt, printed as it is produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DowncycleError
from .fields import INPUT, arg, device_arg

__all__ = ["CHAT_MODES", "GenerateConfig"]

CHAT_MODES = ("auto", "on", "off")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class GenerateConfig:
    """Generate text from a prompt, streaming tokens as they are produced (sampling, chat template)."""

    model: str = arg("model directory (safetensors checkpoint with its tokenizer files)", positional=True, metavar="MODEL",
                     role=INPUT)
    # A plain field, not arg(): an optional positional needs an explicit None default.
    prompt: str | None = field(default=None, metadata={"help": "the prompt text; '-' reads it from stdin (or use --prompt-file)",
                                                       "positional": True, "metavar": "PROMPT", "affects_output": True})
    prompt_file: Path | None = arg("read the prompt from this UTF-8 text file instead", metavar="FILE", role=INPUT)
    max_new_tokens: int = arg("new tokens at most (generation also stops at the model's EOS token)", 128)
    temperature: float = arg("softmax temperature; 0 means greedy (argmax, no sampling)", 0.8)
    top_p: float = arg("nucleus sampling: keep the most likely tokens whose probabilities sum to at least P (1 = off)", 1.0, metavar="P")
    top_k: int = arg("keep only the K most likely tokens (0 = off)", 0, metavar="K")
    repetition_penalty: float = arg("divide positive (multiply negative) logits of tokens already in the text by this (CTRL; 1 = off)", 1.0)
    seed: int | None = arg("random seed of the sampler (default: a different draw each run)")
    chat: str = arg("apply the tokenizer's chat template: auto (when it has one), on (required) or off", "auto")
    system: str | None = arg("system prompt (chat template only)", metavar="TEXT")
    dtype: str = arg("dtype to load the model in: auto (the checkpoint's), float32, bfloat16, float16", "auto")
    device: str = device_arg()
    trust_remote_code: bool = arg("allow models that need their own Python code", False)
    stream: bool = arg("print tokens as they are produced (--no-stream prints the text once it is complete)", True,
                       affects_output=False)

    def __post_init__(self) -> None:
        if self.prompt is not None and self.prompt_file is not None:
            raise DowncycleError("generate takes a PROMPT or --prompt-file, not both")
        if self.prompt is None and self.prompt_file is None:
            raise DowncycleError("generate needs a PROMPT ('-' reads stdin) or --prompt-file FILE")
        if self.prompt_file is not None:
            self.prompt_file = Path(self.prompt_file)
        if self.max_new_tokens < 1:
            raise DowncycleError(f"--max-new-tokens: must be at least 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:  # also refuses NaN
            raise DowncycleError(f"--temperature: must be 0 (greedy) or positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise DowncycleError(f"--top-p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise DowncycleError(f"--top-k: must be 0 (off) or positive, got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise DowncycleError(f"--repetition-penalty: must be positive (1 = off), got {self.repetition_penalty}")
        if self.chat not in CHAT_MODES:
            raise DowncycleError(f"--chat: {self.chat!r} must be one of {', '.join(CHAT_MODES)}")
        if self.system is not None and self.chat == "off":
            raise DowncycleError("--system needs the chat template (drop --chat off)")
        if self.dtype not in _DTYPES:
            raise DowncycleError(f"--dtype: {self.dtype!r} must be one of {', '.join(_DTYPES)}")
