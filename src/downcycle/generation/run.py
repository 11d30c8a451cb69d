"""`downcycle generate`: load a model and its tokenizer, build the prompt (through the chat template
when the tokenizer has one), and print the continuation as it is produced."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DowncycleError
from ..architecture import loaded_text_config
from ..loading import eos_token_ids, load_model, load_tokenizer, read_config, resolve_device, resolve_source
from ..recipe.generate import GenerateConfig
from .sampling import SamplingParams
from .stream import TextStream

__all__ = ["GenerateResult", "encode_prompt", "read_prompt", "run_generate"]


@dataclass
class GenerateResult:
    """What `downcycle generate` produced.

    Attributes:
        text: the continuation (special tokens skipped); the prompt is not repeated.
        prompt_ids: the token ids the model was given (after the chat template, if used).
        tokens: the generated token ids (EOS included when it ended there).
        stop: ``"eos"`` or ``"length"``.
        chat: whether the chat template was applied.
        seconds: wall time of the generation (prompt and new tokens, not loading).
        notes: remarks for the user (e.g. a shortened ``max_new_tokens``).
    """

    text: str
    prompt_ids: list[int]
    tokens: list[int]
    stop: str
    chat: bool
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0


def read_prompt(config: GenerateConfig) -> str:
    """The prompt text: the argument, stdin for ``-``, or ``--prompt-file``. An empty one is an error."""
    if config.prompt_file is not None:
        try:
            text = Path(config.prompt_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DowncycleError(f"{config.prompt_file}: no such prompt file") from None
        except UnicodeDecodeError:
            raise DowncycleError(f"{config.prompt_file}: not UTF-8 text") from None
        where = str(config.prompt_file)
    elif config.prompt == "-":
        text, where = sys.stdin.read(), "stdin"
    else:
        text, where = config.prompt or "", "PROMPT"
    if not text.strip():
        raise DowncycleError(f"{where}: the prompt is empty")
    return text


def encode_prompt(tokenizer: Any, prompt: str, chat: str = "auto", system: str | None = None,
                  source: str = "the tokenizer") -> tuple[list[int], bool]:
    """Token ids of the prompt, and whether the chat template was applied.

    With the chat template (``chat`` ``on``, or ``auto`` and the tokenizer has one) the prompt is
    one user message (after the optional system message), rendered with the generation prompt
    that opens the assistant's turn, and encoded without adding special tokens again (the template
    writes its own BOS). Otherwise the text is encoded as the tokenizer encodes it by default (its
    BOS included when it adds one).
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat == "on" and not has_template:
        raise DowncycleError(f"{source}: --chat on, but the tokenizer has no chat template")
    use = has_template and chat != "off"
    if system is not None and not use:
        raise DowncycleError(f"{source}: --system needs a chat template, and the tokenizer has none")
    if not use:
        return list(tokenizer(prompt)["input_ids"]), False
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": prompt}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # noqa: BLE001 -- a template that cannot render these messages (jinja raise_exception)
        raise DowncycleError(f"{source}: the chat template failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]), True


def _load_tokenizer(path: Path, trust_remote_code: bool) -> Any:
    try:
        return load_tokenizer(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise DowncycleError(f"{path}: no usable tokenizer ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _stdout(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def run_generate(config: GenerateConfig, write: Callable[[str], None] | None = None) -> GenerateResult:
    """Generate a continuation of the configured prompt, writing it as it is produced.

    Args:
        config: the prompt, model and sampling settings.
        write: receives the text: each piece as it is produced with ``config.stream``, else the
            whole continuation once (default: stdout, flushed after each piece).

    Returns:
        A :class:`GenerateResult`.
    """
    import torch

    write = write or _stdout
    prompt = read_prompt(config)  # before the (slow) model load, so a bad prompt fails fast
    src = resolve_source(config.model)
    model_config = read_config(src)
    device = resolve_device(config.device)
    tokenizer = _load_tokenizer(src, config.trust_remote_code)
    prompt_ids, chat = encode_prompt(tokenizer, prompt, config.chat, config.system, source=str(src))
    model = load_model(src, dtype=config.dtype, device=device, trust_remote_code=config.trust_remote_code)

    vocab = model.get_input_embeddings().num_embeddings
    if max(prompt_ids) >= vocab:
        raise DowncycleError(f"{src}: the tokenizer gives token id {max(prompt_ids)}, but the model has only {vocab} embeddings")
    notes, max_new = [], config.max_new_tokens
    limit = getattr(loaded_text_config(model.config), "max_position_embeddings", None) or model_config.get("n_positions")
    if limit is not None:
        if len(prompt_ids) >= limit:
            raise DowncycleError(f"the prompt is {len(prompt_ids)} tokens; {src} handles at most {limit} positions")
        if len(prompt_ids) + max_new > limit:
            max_new = limit - len(prompt_ids)
            notes.append(f"max_new_tokens cut to {max_new}: the model handles at most {limit} positions")

    if config.seed is not None:
        torch.manual_seed(config.seed)  # seeds every device; generate() samples from the global RNG
    params = SamplingParams(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                            repetition_penalty=config.repetition_penalty)
    stream = TextStream(model, tokenizer, prompt_ids, params, max_new, eos_token_ids(model, tokenizer))
    start = time.perf_counter()
    for piece in stream:
        if config.stream:
            write(piece)
    seconds = time.perf_counter() - start
    if not config.stream:
        write(stream.text)
    return GenerateResult(text=stream.text, prompt_ids=prompt_ids, tokens=stream.tokens, stop=stream.stop or "length",
                          chat=chat, seconds=seconds, notes=notes)
