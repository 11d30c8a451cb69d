"""Helpers shared by the tests of `downcycle train`: a learnable in-memory packed dataset, a small
config factory, and reading safetensors weights."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 128  # downcycle.tiny's vocabulary
TOKENIZER_VOCAB = 8192  # examples/tokenizer (BPE)


class MarkovSet(torch.utils.data.Dataset):
    """Packed sequences from a fixed random Markov chain (next token = rule[token], 10% noise).

    Train and val sets with the same ``rule_seed`` share the chain, so training lowers val loss.
    ``ds[i] -> {"input_ids": LongTensor (seq_len,)}``, like ``downcycle.corpus.loader.PackedDataset``.
    """

    def __init__(self, n: int, seq_len: int = 32, seed: int = 0, rule_seed: int = 0, vocab: int = VOCAB) -> None:
        rule = torch.randint(3, vocab, (vocab,), generator=torch.Generator().manual_seed(rule_seed))
        g = torch.Generator().manual_seed(1000 + seed)
        x = torch.empty(n, seq_len, dtype=torch.long)
        x[:, 0] = torch.randint(3, vocab, (n,), generator=g)
        for t in range(1, seq_len):
            noise = torch.rand(n, generator=g) < 0.1
            x[:, t] = torch.where(noise, torch.randint(3, vocab, (n,), generator=g), rule[x[:, t - 1]])
        self.x, self.seq_len, self.num_tokens = x, seq_len, n * seq_len

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i]}


def datasets(n_train: int = 64, n_val: int = 16, seq_len: int = 32):
    return MarkovSet(n_train, seq_len, seed=0), MarkovSet(n_val, seq_len, seed=1)


def train_config(model: Path, out: Path, **kw):
    from downcycle.recipe import TrainConfig

    # fp32 pinned: tests compare runs (resume, processes, chunked loss) for exact or near-exact equality,
    # and --precision auto means bf16 on a CPU with native bf16 (tested in test_train_precision.py)
    base = {"model": str(model), "out": out, "lr": 3e-3, "micro_batch": 4, "max_steps": 8, "progress": False, "lora_dropout": 0.0,
            "precision": "fp32"}
    base.update(kw)
    return TrainConfig(**base)


def weights(directory: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / name))


class SlowSet(torch.utils.data.Dataset):
    """``dataset`` with a delay per item, so a test can kill a run mid-way; the data are unchanged."""

    def __init__(self, dataset, delay: float) -> None:
        self.dataset, self.delay, self.seq_len = dataset, delay, dataset.seq_len

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        import time

        time.sleep(self.delay)
        return self.dataset[i]


# A training run in a fresh interpreter: python -c SCRIPT TESTS_DIR MODEL OUT JSON_KWARGS DELAY [CORPUS_DIR]
# (a real corpus when CORPUS_DIR is given, the in-memory Markov data otherwise)
SCRIPT = """
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
from train_support import SlowSet, datasets, train_config
from downcycle.training import run_train
if len(sys.argv) > 6:
    from downcycle.corpus.loader import PackedDataset
    train, val = PackedDataset(sys.argv[6], "train"), PackedDataset(sys.argv[6], "val")
else:
    train, val = datasets()
delay, kwargs = float(sys.argv[5]), json.loads(sys.argv[4])
if len(sys.argv) > 6:
    kwargs["data"] = sys.argv[6]  # recorded in the manifest
r = run_train(train_config(sys.argv[2], sys.argv[3], **kwargs), datasets=(SlowSet(train, delay) if delay else train, val))
print(json.dumps({"val_loss": r.val_loss, "train_loss": r.train_loss, "main": r.main_process, "notes": r.notes}))
"""
