"""Each method trains a tiny model and lowers validation loss; outputs are normal HF checkpoints;
LoRA changes only adapter weights and its merged model equals base + adapter (QLoRA: test_qlora.py)."""

from __future__ import annotations

import json

import pytest
import torch

from downcycle.errors import DowncycleError
from downcycle.training import run_train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _logits(path_or_model, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path_or_model) if not isinstance(path_or_model, torch.nn.Module) else path_or_model
    with torch.no_grad():
        return model.eval()(ids).logits


@pytest.mark.parametrize("method", ["full", "lora", "distill"])
def test_method_lowers_validation_loss_on_a_real_corpus_and_writes_a_loadable_checkpoint(method, real_model, real_corpus,
                                                                                         tiny_model, tmp_path, train_config,
                                                                                         tokenizer_vocab):
    extra = {"teacher": str(tiny_model("llama", vocab_size=tokenizer_vocab, num_hidden_layers=8, seed=3))} if method == "distill" else {}
    cfg = train_config(real_model, tmp_path / "out", data=real_corpus, method=method, max_steps=12, eval_every=6,
                       lr=1e-2, eval_max_seqs=64, **extra)
    result = run_train(cfg)
    assert result.val_loss < result.val_loss_start - 0.3, (result.val_loss_start, result.val_loss)
    out = tmp_path / "out"
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "val"] == [0, 6, 12]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 13))
    assert (out / "loss.png").stat().st_size > 1000
    manifest = json.loads((out / "downcycle.json").read_text())
    assert manifest["stage"] == "train" and manifest["config"]["method"] == method
    assert manifest["inputs"]["model"]["hashes"]["config.json"] and manifest["inputs"]["data"]["hashes"]["corpus.json"]
    assert manifest["outputs"]["steps"] == 12 and manifest["outputs"]["tokens"] == 12 * 4 * 64
    assert not (tmp_path / "out.run").exists()  # checkpoints of a finished run are removed
    assert (out / "tokenizer.json").is_file()
    ids = torch.randint(3, tokenizer_vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(_logits(out, ids), _logits(real_model, ids))  # it loads, and it changed


def test_lora_changes_only_adapter_weights_and_merged_equals_base_plus_adapter(tiny_model, tmp_path, datasets, train_config,
                                                                               weights):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    src = tiny_model("llama")
    run_train(train_config(src, tmp_path / "out", method="lora", lr=1e-2, lora_r=4, lora_targets="mlp"), datasets=datasets())
    out = tmp_path / "out"
    adapter = weights(out / "adapter", "adapter_model.safetensors")
    assert adapter and all("lora_" in k and "mlp" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero: it trained
    merged, base = weights(out), weights(src)
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(".mlp." in k for k in changed)  # only weights under an adapter moved
    ids = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(src), out / "adapter")
    torch.testing.assert_close(_logits(out, ids), _logits(with_adapter, ids), rtol=1e-4, atol=1e-4)


def test_full_with_train_layers_trains_only_the_last_layer_and_head(tiny_model, tmp_path, datasets, train_config, weights):
    src = tiny_model("llama")
    run_train(train_config(src, tmp_path / "out", train_layers="-1:", train_modules="lm_head", max_steps=3), datasets=datasets())
    base, trained = weights(src), weights(tmp_path / "out")
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert changed == {k for k in base if k.startswith(("model.layers.5.", "lm_head."))}


def test_train_modules_lm_head_of_a_tied_model_trains_the_shared_embedding(tiny_model, tmp_path, datasets, train_config, weights):
    # a tied head is the embedding's tensor under a second name, which named_parameters() omits:
    # naming it must train that tensor (the recipe's "last layers + head" baseline on SmolLM2)
    src = tiny_model("llama", tie_word_embeddings=True)
    run_train(train_config(src, tmp_path / "out", train_layers="-1:", train_modules="lm_head,model.norm", max_steps=3),
              datasets=datasets())
    base, trained = weights(src), weights(tmp_path / "out")
    assert "lm_head.weight" not in base  # tied: stored once
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert changed == {k for k in base if k.startswith(("model.layers.5.", "model.embed_tokens.", "model.norm."))}


def test_existing_output_and_leftover_run_are_refused(tiny_model, tmp_path, datasets, train_config):
    src = tiny_model("llama")
    (tmp_path / "out").mkdir()
    with pytest.raises(DowncycleError, match="already exists"):
        run_train(train_config(src, tmp_path / "out"), datasets=datasets())
    (tmp_path / "b.run" / "checkpoints" / "step-00000002").mkdir(parents=True)
    (tmp_path / "b.run" / "checkpoints" / "step-00000002" / "trainer_state.json").write_text("{}")
    with pytest.raises(DowncycleError, match="pass --resume to continue it or --force to start over"):
        run_train(train_config(src, tmp_path / "b"), datasets=datasets())
    run_train(train_config(src, tmp_path / "b", force=True, max_steps=2), datasets=datasets())
    assert (tmp_path / "b" / "model.safetensors").is_file() and not (tmp_path / "b.run").exists()
    (tmp_path / "c.run").mkdir()  # a run killed before its first checkpoint: nothing to keep, it starts over
    (tmp_path / "c.run" / "train_log.jsonl").write_text('{"step": 1, "split": "train", "loss": 9.0, "tokens": 1}\n')
    run_train(train_config(src, tmp_path / "c", max_steps=2), datasets=datasets())
    assert (tmp_path / "c" / "model.safetensors").is_file() and not (tmp_path / "c.run").exists()


def test_tensorboard_events_hold_the_same_scalars_as_the_jsonl_log(tiny_model, tmp_path, datasets, train_config):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (it is in the dev extra, so CI has it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from downcycle.artifacts.loss_log import read_log

    torch.set_num_threads(1)
    out = tmp_path / "out"
    run_train(train_config(tiny_model("llama"), out, max_steps=4, eval_every=2), datasets=datasets())
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    records = read_log(out / "train_log.jsonl")
    for split, name in (("train", "loss"), ("train", "lr"), ("val", "loss")):
        logged = [(r["step"], r[name]) for r in records if r["split"] == split and name in r]
        scalars = [(e.step, e.value) for e in events.Scalars(f"{split}/{name}")]
        assert len(logged) == len(scalars) > 0, (split, name)
        for (s1, v1), (s2, v2) in zip(logged, scalars):
            assert s1 == s2 and v2 == pytest.approx(v1, rel=1e-6), (split, name)
