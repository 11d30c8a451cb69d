"""axolotl configs: the seed's parses with nothing important ignored; unknown keys are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from downcycle.errors import DowncycleError
from downcycle.recipe import TrainConfig
from downcycle.training.axolotl import apply_axolotl, map_axolotl

SEED = Path(__file__).resolve().parents[2] / "examples" / "axolotl" / "seed-llama-3-6b-qlora.yml"


def test_the_seeds_config_maps_every_training_setting():
    m = map_axolotl(yaml.safe_load(SEED.read_text()), SEED)
    assert m.fields == {
        "model": "prince-canuma/Llama-3-6B-v0.1", "method": "qlora", "lora_r": 128, "lora_alpha": 128, "lora_dropout": 0.05,
        "lora_targets": "all-linear", "grad_accum": 8, "micro_batch": 2, "epochs": 2.0, "optimizer": "paged_adamw_32bit",
        "schedule": "cosine", "lr": 2e-4, "precision": "auto", "gradient_checkpointing": True, "log_every": 1,
        "warmup_steps": 100, "evals_per_epoch": 4, "save_every": 4000, "weight_decay": 0.0, "out": Path("./llama-3-6b"),
    }
    assert m.seq_len == 8192 and m.unknown == []
    # what is ignored is only what downcycle's packed, safetensors-only, JSONL-logging loop does not need
    assert set(m.ignored) == {"model_type", "tokenizer_type", "load_in_8bit", "strict", "dataset_prepared_path", "val_set_size",
                              "save_safetensors", "sample_packing", "pad_to_sequence_len", "train_on_inputs", "group_by_length",
                              "tf32", "flash_attention", "special_tokens"}


def test_unknown_keys_are_reported_and_the_command_line_wins(tmp_path):
    doc = {"base_model": "m", "adapter": "lora", "lora_r": 8, "learning_rate": 1e-3, "frobnicate": 3, "rope_magic": True}
    path = tmp_path / "a.yml"
    path.write_text(yaml.safe_dump(doc))
    config, notes, seq_len = apply_axolotl(TrainConfig(model="cut-model", axolotl=path, lr=5e-4))
    assert config.method == "lora" and config.lora_r == 8 and seq_len is None
    assert config.model == "cut-model" and config.lr == 5e-4  # given on the command line
    assert any("unknown key(s) not used: frobnicate, rope_magic" in n for n in notes)
    assert any("lr = 0.001 overridden by the command line" in n for n in notes)


@pytest.mark.parametrize("doc, message", [
    ({"load_in_8bit": True, "adapter": "lora"}, "8-bit LoRA is not supported"),
    ({"optimizer": "sgd"}, "optimizer: 'sgd' is not supported"),
    ({"datasets": [{"path": "x", "type": "alpaca"}]}, "type 'alpaca' is not supported"),
    ({"adapter": "ia3"}, "adapter: 'ia3' is not supported"),
])
def test_values_downcycle_cannot_honour_are_one_line_errors(doc, message):
    with pytest.raises(DowncycleError, match=message) as err:
        map_axolotl(doc, "cfg.yml")
    assert str(err.value).startswith("cfg.yml: ") and "\n" not in str(err.value)


def test_a_local_corpus_in_datasets_becomes_data_and_sequence_len_is_checked(real_model, real_corpus, tmp_path):
    from downcycle.training import run_train

    path = tmp_path / "a.yml"
    path.write_text(yaml.safe_dump({"datasets": [{"path": str(real_corpus), "type": "completion"}], "sequence_len": 128}))
    config, _, seq_len = apply_axolotl(TrainConfig(model=str(real_model), axolotl=path))
    assert config.data == real_corpus and seq_len == 128
    with pytest.raises(DowncycleError, match="sequence_len 128 differs from the corpus's seq_len 64"):
        run_train(TrainConfig(model=str(real_model), axolotl=path, out=tmp_path / "out", progress=False))
