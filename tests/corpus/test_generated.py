"""`downcycle data --source gen:MODEL`: text sampled from a model as a corpus source. Greedy rows equal
transformers' own greedy generate; a seed fixes the corpus byte for byte; the budget is met; the
manifest records the generating model's hashes and the sampling options."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from downcycle.corpus.generated import GenerationOptions, iter_generated, sample_batch
from downcycle.errors import DowncycleError
from downcycle.recipe import DataConfig

KJV = str(Path(__file__).resolve().parents[2] / "examples" / "corpus" / "kjv.jsonl.gz")


def test_greedy_rows_equal_transformers_generate(real_model, one_torch_thread):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(real_model).eval()
    prompt = torch.tensor([[1, 57, 300, 12], [1, 8, 999, 4000]])
    rows = sample_batch(model, prompt, GenerationOptions(new_tokens=7, temperature=0.0), set(), None)
    expected = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=7, min_new_tokens=7,
                              eos_token_id=None, pad_token_id=0)
    assert rows == expected[:, prompt.size(1):].tolist()


def test_documents_are_seeded_prompted_and_counted(real_model, one_torch_thread):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_model)
    opts = GenerationOptions(new_tokens=6, prompts=KJV, prompt_tokens=4, batch=3, docs=5, seed=7)
    first = [r["text"] for r in iter_generated(f"gen:{real_model}", opts)]
    assert len(first) == 5 and first == [r["text"] for r in iter_generated(f"gen:{real_model}", opts)]
    assert first != [r["text"] for r in iter_generated(f"gen:{real_model}", GenerationOptions(**{**opts.__dict__, "seed": 8}))]
    from downcycle.corpus.sources import iter_texts

    prompts = [tok.decode(tok(t, add_special_tokens=False)["input_ids"][:4]) for t in iter_texts(KJV, limit_docs=5)]
    assert all(text.startswith(p) and len(text) > len(p) for text, p in zip(first, prompts))


@pytest.mark.slow
def test_corpus_from_a_model_is_deterministic_and_meets_its_budget(real_model, tmp_path, one_torch_thread):
    from downcycle.corpus.build import build_corpus

    def build(out: str, seed: int) -> Path:
        return build_corpus(DataConfig(tokenizer=str(real_model), source=[f"gen:{real_model}"], out=tmp_path / out, tokens="1500",
                                       seq_len=32, val=0.1, seed=seed, gen_tokens=32, gen_batch=4, gen_temperature=0.9,
                                       gen_top_p=0.95, progress=False))

    a, b, c = build("a", 0), build("b", 0), build("c", 1)
    shards = lambda d: {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.suffix == ".bin" or p.name.endswith(".npy")}
    assert shards(a) and shards(a) == shards(b) and shards(a) != shards(c)
    man = json.loads((a / "downcycle.json").read_text())
    splits = json.loads((a / "corpus.json").read_text())["splits"]
    assert splits["train"]["tokens"] == splits["train"]["budget"] == 1344 and splits["val"]["tokens"] == 128  # split_budgets(1500, 0.1, 32)
    gen = man["inputs"]["generators"][f"gen:{real_model}"]
    weights = Path(real_model) / "model.safetensors"
    assert gen["sha256"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert gen["sampling"]["temperature"] == 0.9 and gen["sampling"]["top_p"] == 0.95 and gen["sampling"]["seed"] == 0


def test_gen_source_errors(tmp_path):
    with pytest.raises(DowncycleError, match="never ends by itself"):
        DataConfig(tokenizer="t", source=[f"gen:{tmp_path}"], out=tmp_path / "o")
    with pytest.raises(DowncycleError, match="--gen-top-p"):
        DataConfig(tokenizer="t", source=[f"gen:{tmp_path}"], out=tmp_path / "o", tokens="1K", gen_top_p=0)
    from downcycle.corpus.sources import check_source

    with pytest.raises(DowncycleError, match="not a model directory"):
        check_source(f"gen:{tmp_path}")


def test_generated_documents_split_in_proportion_to_the_budgets():
    from types import SimpleNamespace

    from downcycle.corpus.build import generated_split

    packers = {"train": SimpleNamespace(full=False), "val": SimpleNamespace(full=False)}
    splits = [generated_split(i, 0.25, packers) for i in range(12)]
    assert splits == ["train", "train", "train", "val"] * 3  # every 4th document, at fixed positions
    packers["val"].full = True
    assert generated_split(3, 0.25, packers) == "train"  # a full split's document goes to the other
    assert generated_split(3, 0.25, {"train": packers["train"]}) == "train"  # no validation split
