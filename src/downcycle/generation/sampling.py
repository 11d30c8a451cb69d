"""Choosing the next token from a model's logits, as ``transformers``' ``generate`` chooses it.

The definitions are those of the ``transformers`` logits processors, applied in the order
``generate`` applies them (``GenerationMixin._get_logits_processor``, transformers 5.x):

1. repetition penalty (Keskar et al. 2019, CTRL; ``RepetitionPenaltyLogitsProcessor``): the logit
   of every token already in the sequence (prompt included) is divided by the penalty when it is
   positive and multiplied by it when negative, so a penalty > 1 always makes it less likely;
   applied in greedy decoding too;
2. temperature (``TemperatureLogitsWarper``): logits / T;
3. top-k (``TopKLogitsWarper``): logits below the k-th largest become -inf (ties at the k-th
   value are kept);
4. top-p (``TopPLogitsWarper``, Holtzman et al. 2020): sorted ascending, the tokens whose
   cumulative probability is <= 1 - p are removed, the most likely token always kept
   (``min_tokens_to_keep=1``);

then the next token is ``torch.multinomial(softmax(scores), 1)``, on float32 logits, which is the
same draw from the global torch RNG that ``generate(do_sample=True)`` makes: with the same seed the
two produce the same tokens. Temperature 0 means greedy: the argmax, with no warper applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RepetitionTracker", "SamplingParams", "choose_token", "warp_scores"]


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


class RepetitionTracker:
    """The set of token ids seen so far, as a boolean mask over the vocabulary, and the penalty it
    implies. A mask updated one token per step gives the same result as ``transformers``' gather and
    scatter over the whole sequence, in O(vocab) per step instead of a pass over the sequence.

    Args:
        vocab_size: width of the logits (ids at or above it are ignored, as transformers ignores them).
        penalty: the repetition penalty; 1.0 makes :meth:`apply` a no-op.
        device: where the logits live.
    """

    def __init__(self, vocab_size: int, penalty: float, device: Any = "cpu") -> None:
        import torch

        self.vocab_size, self.penalty = vocab_size, float(penalty)
        self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)  # (V,)

    def add(self, ids: Any) -> None:
        """Mark token ids (an int, a list or a tensor) as present in the sequence."""
        import torch

        ids = torch.as_tensor(ids, dtype=torch.long, device=self.seen.device).reshape(-1)
        self.seen[ids[ids < self.vocab_size]] = True

    def apply(self, scores: Any) -> Any:
        """Penalized copy of ``scores`` (..., V): seen tokens' logits divided by the penalty when
        positive, multiplied when negative."""
        import torch

        if self.penalty == 1.0:
            return scores
        penalized = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(self.seen, penalized, scores)


def warp_scores(scores: Any, params: SamplingParams) -> Any:
    """Temperature, then top-k, then top-p, as ``generate(do_sample=True)`` warps its scores.

    Args:
        scores: float logits (B, V), already repetition-penalized.
        params: the sampling parameters (``params.temperature > 0``).

    Returns:
        The warped scores (B, V), removed tokens at -inf.
    """
    import torch

    if params.temperature != 1.0:
        scores = scores / params.temperature
    if params.top_k:
        k = min(params.top_k, scores.size(-1))
        kth = torch.topk(scores, k)[0][..., -1, None]  # (B, 1): the k-th largest logit
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)  # (B, V), most likely last
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - params.top_p)
        remove[..., -1:] = False  # min_tokens_to_keep = 1: the most likely token survives any p
        scores = scores.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return scores


def choose_token(logits: Any, params: SamplingParams, repetition: RepetitionTracker | None = None) -> Any:
    """The next token of each row.

    Args:
        logits: the model's last-position logits (B, V), any float dtype (computed in float32,
            as ``generate`` computes them).
        params: how to choose.
        repetition: the tokens seen so far, when a repetition penalty applies.

    Returns:
        Token ids (B,), long.
    """
    import torch

    scores = logits.to(dtype=torch.float32)
    if repetition is not None:
        scores = repetition.apply(scores)
    if params.greedy:
        return scores.argmax(dim=-1)
    probs = torch.softmax(warp_scores(scores, params), dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)
