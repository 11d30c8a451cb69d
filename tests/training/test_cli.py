"""`downcycle train` through the real CLI: a LoRA run on a real corpus, one-line errors, fast help."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def _downcycle(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "downcycle", *argv], capture_output=True, text=True, env=ENV, timeout=300, check=False)


@pytest.mark.slow
def test_cli_trains_lora_on_a_corpus_and_writes_model_adapter_and_logs(real_model, real_corpus, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "healed"
    done = _downcycle("train", str(real_model), "--data", str(real_corpus), "--out", str(out), "--method", "lora",
                      "--max-steps", "3", "--lora-r", "4", "--eval-max-seqs", "16", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}: lora, 3 steps, 768 tokens" in done.stdout
    assert {"model.safetensors", "config.json", "tokenizer.json", "downcycle.json", "train_log.jsonl", "loss.png"} <= {p.name for p in out.iterdir()}
    assert (out / "adapter" / "adapter_config.json").is_file()
    AutoModelForCausalLM.from_pretrained(out)
    manifest = json.loads((out / "downcycle.json").read_text())
    assert manifest["config"]["lora_r"] == 4 and manifest["inputs"]["data"]["path"] == str(real_corpus.resolve())


@pytest.mark.parametrize("argv, message", [
    (["train", "{model}", "--out", "{tmp}/o"], "train needs --data CORPUS_DIR"),
    (["train", "{model}", "--data", "{model}", "--out", "{tmp}/o"], "not a corpus directory (no corpus.json)"),
    (["train", "{model}", "--data", "{corpus}", "--out", "{tmp}/o", "--method", "sft"], "--method 'sft': unknown (known: full, lora, qlora, distill)"),
    (["train", "{model}", "--data", "{corpus}", "--out", "{tmp}/o", "--schedule", "step"], "--schedule 'step': expected one of"),
    (["train", "{model}", "--data", "{corpus}", "--out", "{tmp}/o", "--method", "distill"], "--method distill needs --teacher"),
    (["train", "{small}", "--data", "{corpus}", "--out", "{tmp}/o"], "8192-token vocabulary, larger than the model's 128 embeddings"),
    (["train", "{model}", "--data", "{corpus}", "--out", "{tmp}/o", "--micro-batch", "4096"], "fewer than one global batch"),
])
def test_user_mistakes_are_one_line_errors(argv, message, real_model, real_corpus, tiny_model, tmp_path):
    from downcycle.cli import main

    args = [a.format(model=real_model, tmp=tmp_path, corpus=real_corpus, small=tiny_model("llama")) for a in argv]
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(args) == 1
    assert err.getvalue().count("\n") == 1 and message in err.getvalue(), err.getvalue()


def test_train_help_does_not_import_torch():
    code = ("import sys, contextlib, io\nfrom downcycle.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['train', '--help'])\n    except SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'accelerate', 'peft') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_methods_and_losses_are_listed_registries():
    from downcycle.registries import list_registries

    assert list(list_registries("methods")["methods"]) == ["full", "lora", "qlora", "distill"]
    assert "forward_kl" in list_registries("distill_losses")["distill_losses"]


def test_every_shipped_accelerate_config_is_valid():
    from pathlib import Path

    from accelerate.commands.config.config_args import ClusterConfig

    configs = sorted((Path(__file__).resolve().parents[2] / "examples" / "accelerate").rglob("*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        config = ClusterConfig.from_yaml_file(str(path))  # raises on unknown keys
        assert config.distributed_type in ("NO", "MULTI_GPU", "FSDP", "DEEPSPEED"), path
