"""Text generation for people: one prompt, continued by ``transformers``' ``generate`` and printed as
it is produced (`downcycle generate`).

``generate`` does the sampling (repetition penalty, temperature, top-k, top-p, the draw from the
global torch RNG) and the KV-cached decoding loop; its ``TextIteratorStreamer`` does the incremental
detokenizing (never printing half a character). What this package keeps is what they lack:

- :mod:`.sampling`: downcycle's settings with their own meaning (temperature 0 is greedy, top-k 0
  is off where ``generate`` defaults to 50) and checks, spelled as ``generate`` keyword arguments
  that a checkpoint's ``generation_config.json`` cannot override;
- :mod:`.stream`: ``generate`` in a worker thread behind the streamer, with the generated ids, the
  stop reason (EOS or length) and the worker's exception handed back to the caller;
- :mod:`.greedy`: batched greedy generation with stop sequences (many prompts, every sequence
  stopping on its own), as lm-evaluation-harness generates for ``generate_until`` requests: the
  generative tasks of ``downcycle eval`` and the samples of ``downcycle report``;
- :mod:`.run`: the command: the prompt from an argument, stdin or a file, the chat template
  (system message, generation prompt, no second BOS), the model's position limit, printing;
  :mod:`.summary` says what it did.

This package sits below the stage packages (evaluation and report use :mod:`.greedy`, ``data``'s
generated sources use :mod:`.sampling`) and imports none of them.
"""

from .greedy import Generation, cut_at_stops, greedy_generate
from .run import GenerateResult, encode_prompt, read_prompt, run_generate
from .sampling import SamplingParams, generate_kwargs
from .stream import TextStream, generate_tokens, text_streamer

__all__ = [
    "GenerateResult", "Generation", "SamplingParams", "TextStream", "cut_at_stops", "encode_prompt", "generate_kwargs",
    "generate_tokens", "greedy_generate", "read_prompt", "run_generate", "text_streamer",
]  # fmt: skip
