"""Text generation for people: one prompt, sampled as ``transformers``' ``generate`` samples, printed
as it is produced (`downcycle generate`).

- :mod:`.sampling`: repetition penalty, temperature, top-k, top-p and the token draw;
- :mod:`.detokenize`: token ids to printable text pieces, never splitting a character;
- :mod:`.stream`: the KV-cached decoding loop;
- :mod:`.run`: the command (model and tokenizer loading, chat template, printing).

Batched greedy generation for benchmarks (stop sequences, many prompts) is
:mod:`downcycle.evaluation.generation`.
"""

from .detokenize import IncrementalDecoder
from .run import GenerateResult, encode_prompt, read_prompt, run_generate
from .sampling import RepetitionTracker, SamplingParams, choose_token, warp_scores
from .stream import TextStream, generate_tokens

__all__ = [
    "GenerateResult", "IncrementalDecoder", "RepetitionTracker", "SamplingParams", "TextStream", "choose_token",
    "encode_prompt", "generate_tokens", "read_prompt", "run_generate", "warp_scores",
]  # fmt: skip
