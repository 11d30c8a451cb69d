"""Shared helpers of the evaluation tests: a small byte-level BPE tokenizer trained on the committed
task items, and tiny models with that vocabulary (built locally, no network)."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"
SHIPPED_TOKENIZER = Path(__file__).resolve().parent.parent / "examples" / "tokenizer"


def _texts() -> list[str]:
    out = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            out.append(" ".join(str(v) for v in json.loads(line).values()))
    return out


def train_tokenizer(directory: Path, vocab_size: int = 2000, bos: bool = True):
    """Train a byte-level BPE tokenizer and save it (as a transformers fast tokenizer) into ``directory``.

    With ``bos`` the tokenizer prepends ``<s>`` to every encoding (like Llama's), otherwise it adds
    nothing (like GPT-2's); ``<s>``/``</s>``/``<pad>`` are ids 1/2/0 either way.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_texts(), trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(directory)
    return fast


def build_eval_model(directory: Path, family: str = "llama", bos: bool = True, seed: int = 0, **overrides) -> Path:
    """A tiny ``family`` model plus a tokenizer in ``directory`` (2 layers, 2048 positions): the shipped
    examples/tokenizer when present (and ``bos``), else one trained on the fixtures."""
    from downcycle.tiny import build_tiny

    directory = Path(directory)
    kwargs = {"num_hidden_layers": 2, "max_position_embeddings": 2048, "bos_token_id": 1, "eos_token_id": 2,
              "pad_token_id": 0, "initializer_range": 0.05}
    kwargs.update(overrides)
    if bos and (SHIPPED_TOKENIZER / "tokenizer.json").is_file():  # the project's real BPE tokenizer (adds BOS)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(SHIPPED_TOKENIZER)
        kwargs.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    else:
        tok = train_tokenizer(directory, bos=bos)
    build_tiny(family, directory, seed=seed, vocab_size=len(tok), **kwargs)
    tok.save_pretrained(directory)
    return directory
