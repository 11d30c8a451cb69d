"""Fixtures of the `downcycle train` tests: a learnable in-memory packed dataset, a small config
factory, reading safetensors weights, and a training run's script for a fresh interpreter."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
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


def markov_datasets(n_train: int = 64, n_val: int = 16, seq_len: int = 32):
    return MarkovSet(n_train, seq_len, seed=0), MarkovSet(n_val, seq_len, seed=1)


def small_train_config(model: Path, out: Path, **kw):
    from downcycle.recipe import TrainConfig

    # fp32 pinned: tests compare runs (resume, processes, chunked loss) for exact or near-exact equality,
    # and --precision auto means bf16 on a CPU with native bf16 (tested in test_precision.py)
    base = {"model": str(model), "out": out, "lr": 3e-3, "micro_batch": 4, "max_steps": 8, "progress": False, "lora_dropout": 0.0,
            "precision": "fp32"}
    base.update(kw)
    return TrainConfig(**base)


def read_weights(directory: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / name))


# The run itself: python SCRIPT MODEL OUT JSON_KWARGS DELAY [CORPUS_DIR]
# (a real corpus when CORPUS_DIR is given, the in-memory Markov data otherwise)
_RUN = """
torch.set_num_threads(1)
from downcycle.training import run_train
if len(sys.argv) > 5:
    from downcycle.corpus.loader import PackedDataset
    train, val = PackedDataset(sys.argv[5], "train"), PackedDataset(sys.argv[5], "val")
else:
    train, val = markov_datasets()
delay, kwargs = float(sys.argv[4]), json.loads(sys.argv[3])
if len(sys.argv) > 5:
    kwargs["data"] = sys.argv[5]  # recorded in the manifest
r = run_train(small_train_config(sys.argv[1], sys.argv[2], **kwargs), datasets=(SlowSet(train, delay) if delay else train, val))
print(json.dumps({"val_loss": r.val_loss, "train_loss": r.train_loss, "main": r.main_process, "notes": r.notes}))
"""


@pytest.fixture(scope="session")
def tokenizer_vocab() -> int:
    """The vocabulary size of examples/tokenizer (and so of ``real_model``)."""
    return TOKENIZER_VOCAB


@pytest.fixture(scope="session")
def datasets():
    """``datasets(n_train=64, n_val=16, seq_len=32)`` -> (train, val): :class:`MarkovSet` sets sharing their chain."""
    return markov_datasets


@pytest.fixture(scope="session")
def train_config():
    """``train_config(model, out, **fields)`` -> a TrainConfig for a short float32 run (8 steps, micro batch 4)."""
    return small_train_config


@pytest.fixture(scope="session")
def weights():
    """``weights(directory, name="model.safetensors")`` -> ``{name: tensor}`` of a safetensors file."""
    return read_weights


@pytest.fixture(scope="session")
def train_script() -> str:
    """A training run in a fresh interpreter: ``python -c SCRIPT MODEL OUT JSON_KWARGS DELAY [CORPUS_DIR]``
    (or the script written to a file, for torchrun) trains on the corpus at CORPUS_DIR, else on the
    in-memory Markov data, slowed by DELAY seconds per item, and prints its result as JSON. The script
    carries the source of this conftest's helpers, so it imports nothing from the tests."""
    helpers = "\n\n".join(inspect.getsource(f) for f in (MarkovSet, SlowSet, markov_datasets, small_train_config))
    return f"from __future__ import annotations\nimport json, sys\nfrom pathlib import Path\nimport torch\nVOCAB = {VOCAB}\n\n{helpers}\n{_RUN}"
