#!/usr/bin/env python3
"""Train the shipped byte-level BPE tokenizer (examples/tokenizer/) on the shipped corpus.

    python scripts/train_tokenizer.py                      # writes examples/tokenizer/
    python scripts/train_tokenizer.py --vocab-size 8192 --out DIR

Byte-level BPE (GPT-2 style pre-tokenization, every byte in the alphabet, so no text is ever
unknown) with three special tokens: ``<|pad|>`` (0), ``<|bos|>`` (1), ``<|eos|>`` (2). Like Llama's,
its post-processor prepends BOS, so models trained with it expect BOS at the start of a document.
Training reads the corpus files in sorted order and is single-threaded-deterministic: the same
corpus gives the same tokenizer.json byte for byte (the script checks the hash it prints).
The directory loads offline with ``AutoTokenizer.from_pretrained(DIR)``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>"]


def train(corpus_glob: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from downcycle.corpus.sources import iter_texts

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(iter_texts(corpus_glob), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B",
                                                       special_tokens=[("<|bos|>", tok.token_to_id("<|bos|>"))])
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description="train the shipped byte-level BPE tokenizer")
    parser.add_argument("--corpus", default=str(ROOT / "examples" / "corpus" / "*.jsonl.gz"))
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=ROOT / "examples" / "tokenizer")
    args = parser.parse_args()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # merges are counted deterministically either way; be sure

    from transformers import PreTrainedTokenizerFast

    tok = train(args.corpus, args.vocab_size)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
                                   clean_up_tokenization_spaces=False)
    args.out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(args.out))
    config_path = args.out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"  # what transformers 4.x and 5.x both load
    config["model_max_length"] = 1 << 20  # no inherent limit; the model's config sets the context
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    special = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
    (args.out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    digest = hashlib.sha256((args.out / "tokenizer.json").read_bytes()).hexdigest()
    print(f"wrote {args.out}: {tok.get_vocab_size()} entries, tokenizer.json sha256 {digest}")


if __name__ == "__main__":
    main()
