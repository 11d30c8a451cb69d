"""How the next token is chosen, as settings for ``transformers``' ``generate``.

``generate`` applies the repetition penalty (CTRL, Keskar et al. 2019: logits of tokens already in
the sequence, prompt included, divided by the penalty when positive and multiplied when negative;
in greedy decoding too), then temperature, top-k and top-p (Holtzman et al. 2020), and draws from
the global torch RNG, so ``torch.manual_seed`` fixes a run. :class:`SamplingParams` holds
downcycle's meaning of each setting and :func:`generate_kwargs` spells it for ``generate``
completely: temperature 0 is greedy decoding, top-k 0 and top-p 1 are off (``generate``'s own
default top-k is 50), and nothing of the checkpoint's ``generation_config.json`` changes the draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SamplingParams", "generate_kwargs"]


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen.

    Attributes:
        temperature: 0 for greedy decoding, else the softmax temperature (> 0).
        top_k: keep only the k largest logits; 0 turns it off.
        top_p: nucleus mass in (0, 1]; 1 turns it off.
        repetition_penalty: > 0; 1 turns it off.
    """

    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# Every other setting by which generate() could shape the draw, off: a checkpoint's generation_config.json
# (min_p, typical_p, no_repeat_ngram_size, ...) does not change what downcycle's settings mean.
_OFF = {"top_h": None, "min_p": None, "typical_p": None, "epsilon_cutoff": None, "eta_cutoff": None, "no_repeat_ngram_size": None,
        "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
        "forced_eos_token_id": None, "min_new_tokens": None, "min_length": 0}


def generate_kwargs(params: SamplingParams, max_new_tokens: int, eos_ids: set[int] | frozenset[int] | list[int],
                    pad_token_id: int | None = None) -> dict[str, Any]:
    """The keyword arguments that make ``model.generate`` choose tokens as ``params`` says.

    Passed as keyword arguments, they take precedence over the checkpoint's generation config (a
    ``GenerationConfig`` object would have its unset fields filled from it).

    Args:
        params: how each token is chosen.
        max_new_tokens: tokens to produce at most (>= 1).
        eos_ids: token ids that end a sequence (generate returns the EOS token as the last one); empty:
            always ``max_new_tokens`` tokens.
        pad_token_id: what finished rows of a batch are padded with (default: an EOS id, else 0).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    eos = sorted(int(i) for i in eos_ids)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    if params.greedy:
        choice = {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    else:
        choice = {"do_sample": True, "temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p}
    return {**_OFF, **choice, "repetition_penalty": params.repetition_penalty, "max_new_tokens": max_new_tokens,
            "eos_token_id": eos or None, "pad_token_id": pad}
