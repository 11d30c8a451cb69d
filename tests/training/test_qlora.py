"""QLoRA (a 4-bit NF4 base from bitsandbytes + LoRA) on the CPU, as CI runs it: it lowers validation
loss on the shipped corpus, trains only the adapter, and its merged checkpoint is the dequantized
base + the adapter's delta, bit for bit; a run killed with SIGKILL resumes exactly; the seed's axolotl
config runs end to end; missing or unusable bitsandbytes is a one-line error naming what to install.

The references are computed without downcycle: the 4-bit base is quantised by transformers +
bitsandbytes directly (quantisation is deterministic, so it equals the training's), dequantized
with ``bitsandbytes.functional.dequantize_4bit``, and the delta is ``(B @ A) * alpha / r`` from the
saved adapter file.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from downcycle.errors import DowncycleError
from downcycle.training import run_train

# bitsandbytes is in the dev extra, so CI has it and these tests must run there, never skip.
if os.environ.get("CI"):
    bnb = importlib.import_module("bitsandbytes")
else:
    bnb = pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install 'downcycle[qlora]'; the dev extra has it)")

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEED = Path(__file__).resolve().parents[2] / "examples" / "axolotl" / "seed-llama-3-6b-qlora.yml"
_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
R, ALPHA = 16, 32.0  # scale alpha / r = 2, so a merge that forgot the scale would show


def _four_bit(src: Path, device: str = "cpu"):
    """The source quantised to NF4 by transformers + bitsandbytes directly, as the issue's user did."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(str(src), quantization_config=quant, dtype=torch.float32, device_map={"": device})


@pytest.fixture(scope="module")
def expected_merge(weights):
    """``expected_merge(src, adapter_dir, device="cpu")`` -> ``{name: dequantize_4bit(W) + (B @ A) * alpha / r}``
    for every 4-bit linear layer of ``src`` (on the CPU)."""

    def merge(src: Path, adapter_dir: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
        from bitsandbytes.functional import dequantize_4bit

        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        scale = config["lora_alpha"] / config["r"]
        adapter = {k: v.to(device) for k, v in weights(adapter_dir, "adapter_model.safetensors").items()}
        out = {}
        for name, module in _four_bit(src, device).named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                w = dequantize_4bit(module.weight.data, module.weight.quant_state).float()
                a, b = (adapter[f"base_model.model.{name}.lora_{x}.weight"] for x in "AB")
                out[f"{name}.weight"] = (w + (b @ a) * scale).cpu()
        return out

    return merge


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def qlora_run(real_model, real_corpus, tmp_path_factory, train_config):
    out = tmp_path_factory.mktemp("qlora") / "out"
    # fp32 compute, so the comparisons below are of float32 arithmetic on every CPU (auto is bf16 on some)
    result = run_train(train_config(real_model, out, data=real_corpus, method="qlora", lora_r=R, lora_alpha=ALPHA, max_steps=12,
                                    eval_every=6, lr=1e-2, eval_max_seqs=64, precision="fp32"))
    return result, out


def test_qlora_lowers_validation_loss_on_the_shipped_corpus_and_writes_a_plain_checkpoint(qlora_run, real_model):
    from transformers import AutoModelForCausalLM

    result, out = qlora_run
    assert result.method == "qlora" and result.val_loss < result.val_loss_start - 0.3, (result.val_loss_start, result.val_loss)
    manifest = json.loads((out / "downcycle.json").read_text())
    assert manifest["outputs"]["weights"] == "merged dequantized 4-bit base + LoRA adapter"
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (R, ALPHA)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(out)  # loadable as is: no bitsandbytes, no peft
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())


def test_only_the_adapter_trains_and_the_merge_is_the_dequantized_base_plus_the_delta_exactly(qlora_run, real_model, weights,
                                                                                              tokenizer_vocab, expected_merge):
    from transformers import AutoModelForCausalLM

    _, out = qlora_run
    merged, source = weights(out), weights(real_model)
    expected = expected_merge(real_model, out / "adapter")
    assert merged.keys() == source.keys() and expected and set(expected) < set(merged)
    for name in merged:  # bitwise: linear layers = dequantized base + delta; the rest = the source's tensors
        assert torch.equal(merged[name], expected.get(name, source[name])), name
    adapter = weights(out / "adapter", "adapter_model.safetensors")
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # every adapter moved (B starts at 0)
    # logits: the saved checkpoint equals, exactly, an fp32 model built in memory from those weights
    in_memory = AutoModelForCausalLM.from_pretrained(real_model, dtype=torch.float32)
    in_memory.load_state_dict({**dict(in_memory.state_dict()), **expected})
    ids = torch.randint(3, tokenizer_vocab, (2, 32), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(out).eval(), ids), _logits(in_memory.eval(), ids),
                               rtol=0, atol=0)


def test_merged_logits_equal_the_4bit_base_plus_adapter_within_float_rounding(qlora_run, real_model, real_corpus,
                                                                              tokenizer_vocab):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from downcycle.corpus.loader import PackedDataset

    result, out = qlora_run
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    # What was trained: the 4-bit base + adapter. Train mode (dropout is 0) keeps bitsandbytes' CPU
    # eval-time bf16 repacking away, so it computes as training did.
    four_bit = PeftModel.from_pretrained(_four_bit(real_model), out / "adapter").train()
    original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(real_model), out / "adapter").eval()
    ids = torch.randint(3, tokenizer_vocab, (2, 32), generator=torch.Generator().manual_seed(1))
    want, got = _logits(four_bit, ids), _logits(merged, ids)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # x (W + BA)^T vs x W^T + (x A^T) B^T: rounding only
    # ...where the original full-precision weights + the adapter differ by the quantisation error
    assert (_logits(original, ids) - want).abs().max() > 1000 * (got - want).abs().max()
    # and the merged model's validation loss is the one the run reported (sums over the same 64 sequences)
    val = PackedDataset(real_corpus, "val")
    batch = torch.stack([torch.as_tensor(val[i]["input_ids"]).long() for i in range(min(64, len(val)))])
    with torch.no_grad():
        logits = merged(batch).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    assert nll.item() == pytest.approx(result.val_loss, rel=1e-5)


@pytest.mark.slow
def test_bf16_compute_trains_the_same_4bit_base_and_merges_it_exactly(tiny_model, tmp_path, weights, train_script,
                                                                      expected_merge):
    # its own process: accelerate keeps one mixed-precision state per process
    src = tiny_model("llama", hidden_size=64, intermediate_size=128)
    kwargs = {"method": "qlora", "lr": 1e-2, "max_steps": 8, "precision": "bf16", "lora_r": R, "lora_alpha": ALPHA}
    proc = subprocess.run([sys.executable, "-c", train_script, str(src), str(tmp_path / "out"), json.dumps(kwargs), "0"],
                          env=_ENV, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    manifest = json.loads((tmp_path / "out" / "downcycle.json").read_text())
    assert manifest["outputs"]["precision"] == "bf16" and result["val_loss"] < manifest["outputs"]["val_loss_start"]
    merged, source = weights(tmp_path / "out"), weights(src)
    expected = expected_merge(src, tmp_path / "out" / "adapter")  # quantised from the float32 weights, as for fp32
    for name in merged:
        assert torch.equal(merged[name], expected.get(name, source[name])), name


@pytest.mark.slow
def test_qlora_sigkill_then_resume_equals_an_uninterrupted_run(real_model, real_corpus, tmp_path, weights, train_script):
    from downcycle.training.checkpointing import list_checkpoints

    def run(out, kwargs, delay=0.0):
        return subprocess.Popen([sys.executable, "-c", train_script, str(real_model), str(out), json.dumps(kwargs), str(delay),
                                 str(real_corpus)], env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # Dropout: a random mask every step, so equality needs the adapter, optimizer, scheduler, RNG and
    # data position restored; the 4-bit base is re-quantised from the source on resume.
    kwargs = {"method": "qlora", "max_steps": 10, "save_every": 3, "eval_every": 4, "warmup_steps": 2, "lora_dropout": 0.2,
              "lora_r": R, "lora_alpha": ALPHA, "grad_accum": 2, "micro_batch": 2, "lr": 5e-3, "eval_max_seqs": 16}
    reference, killed = run(tmp_path / "ref", kwargs), run(tmp_path / "out", kwargs, delay=0.03)
    ckpt_root, log = tmp_path / "out.run" / "checkpoints", tmp_path / "out.run" / "train_log.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline:  # kill once a checkpoint exists and the run has gone past it
        ckpts = list_checkpoints(ckpt_root)
        if ckpts and ckpts[-1][0] >= 3 and log.is_file() and any(json.loads(x)["step"] >= 5 for x in log.read_text().splitlines() if x.strip()):
            break
        assert killed.poll() is None, killed.communicate()[1][-3000:]
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "out").exists() and list_checkpoints(ckpt_root)
    resumed = run(tmp_path / "out", {**kwargs, "resume": True})
    for proc in (reference, resumed):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    assert any("resumed from" in n for n in json.loads(stdout.splitlines()[-1])["notes"])
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):
        ref, got = weights(tmp_path / "ref", name), weights(tmp_path / "out", name)
        assert ref.keys() == got.keys()
        for key in ref:
            assert torch.equal(ref[key], got[key]), (name, key)
    strip = lambda path: [{k: v for k, v in json.loads(x).items() if k != "tokens_per_s"} for x in path.read_text().splitlines()]
    assert strip(tmp_path / "out" / "train_log.jsonl") == strip(tmp_path / "ref" / "train_log.jsonl")


def test_resume_onto_a_changed_base_model_is_refused(tiny_model, tmp_path, monkeypatch, datasets, train_config, weights):
    import shutil

    from safetensors.torch import save_file

    from downcycle.training import run as run_module

    src = tmp_path / "src"
    shutil.copytree(tiny_model("llama"), src)
    monkeypatch.setattr(run_module, "_write_output", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash before OUT")))
    with pytest.raises(RuntimeError, match="crash before OUT"):
        run_train(train_config(src, tmp_path / "out", method="qlora", max_steps=4, save_every=2), datasets=datasets())
    monkeypatch.undo()
    tensors = weights(src)
    tensors["model.layers.0.mlp.up_proj.weight"] = tensors["model.layers.0.mlp.up_proj.weight"] * 1.5
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(DowncycleError, match=r"model.layers.0.mlp.up_proj.*differs from the 4-bit base quantised now") as err:
        run_train(train_config(src, tmp_path / "out", method="qlora", max_steps=4, save_every=2, resume=True), datasets=datasets())
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_the_seeds_axolotl_config_runs_on_the_shipped_references_cut(real_corpus, tmp_path, weights):
    """The seed's own file, only sequence_len set to the test corpus's 64 (its 8192 takes many minutes
    per step on a CPU; BENCHMARKS.md has that run) and the cut, --max-steps and --eval-max-seqs given
    on the command line."""
    from downcycle.surgery.cut import cut
    from downcycle.recipe import CutConfig
    from downcycle.training.optim import lr_factor

    reference = Path(__file__).resolve().parents[2] / "examples" / "reference"
    cut(CutConfig(source=str(reference), out=tmp_path / "cut", layers="0-8", progress=False))  # the seed: first 75% of layers
    doc = yaml.safe_load(SEED.read_text())
    doc["sequence_len"] = 64
    axolotl = tmp_path / "seed.yml"
    axolotl.write_text(yaml.safe_dump(doc))
    # the CLI, in its own process (bf16: auto is bf16 on a CPU with native bf16, and accelerate keeps
    # one precision per process)
    proc = subprocess.run([sys.executable, "-m", "downcycle", "train", str(tmp_path / "cut"), "--axolotl", str(axolotl),
                           "--data", str(real_corpus), "--out", str(tmp_path / "healed"), "--max-steps", "3", "--eval-max-seqs", "32",
                           "--no-progress"],
                          env=_ENV, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "healed" / "downcycle.json").read_text())
    notes, cfg = manifest["outputs"]["notes"], manifest["config"]
    assert cfg["method"] == "qlora" and manifest["outputs"]["steps"] == 3
    assert any("--optimizer paged_adamw_32bit" in n and "as --optimizer adamw" in n for n in notes), notes
    assert (cfg["lora_r"], cfg["lora_alpha"], cfg["lora_targets"], cfg["schedule"], cfg["warmup_steps"]) == (128, 128, "all-linear", "cosine", 100)
    assert cfg["gradient_checkpointing"] and cfg["micro_batch"] * cfg["grad_accum"] == 16
    adapter_config = json.loads((tmp_path / "healed" / "adapter" / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (128, 128)
    # LoRA on every linear layer of the 9 decoder layers (7 each), none on the head
    adapter = weights(tmp_path / "healed" / "adapter", "adapter_model.safetensors")
    assert len(adapter) == 9 * 7 * 2 and not any("lm_head" in k for k in adapter)
    records = [json.loads(x) for x in (tmp_path / "healed" / "train_log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["split"] == "train"]
    assert lrs == pytest.approx([2e-4 * lr_factor(s, 3, 100, "cosine") for s in range(3)])  # warmup, as the file says
    assert all(r["loss"] == r["loss"] for r in records)


def test_without_bitsandbytes_qlora_is_a_one_line_error_naming_the_extra(tiny_model, tmp_path, monkeypatch, datasets,
                                                                         train_config):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    with pytest.raises(DowncycleError, match=r"needs bitsandbytes: pip install 'downcycle\[qlora\]'") as err:
        run_train(train_config(tiny_model("llama"), tmp_path / "out", method="qlora"), datasets=datasets())
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_a_device_bitsandbytes_does_not_support_is_a_one_line_error(tiny_model, tmp_path, monkeypatch, datasets, train_config):
    monkeypatch.setattr(bnb, "supported_torch_devices", {"cuda"})
    with pytest.raises(DowncycleError, match=r"has no 4-bit support on cpu \(it supports cuda\); pip install -U bitsandbytes") as err:
        run_train(train_config(tiny_model("llama"), tmp_path / "out", method="qlora", device="cpu"), datasets=datasets())
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_paged_optimizers_fall_back_to_the_same_update_off_cuda():
    from downcycle.training.optim import resolve_optimizer

    assert resolve_optimizer("paged_adamw_32bit", "cuda") == ("paged_adamw_32bit", None)
    name, note = resolve_optimizer("paged_adamw_32bit", "cpu")
    assert name == "adamw" and "paging needs CUDA unified memory" in note
    assert resolve_optimizer("paged_adamw_8bit", "cpu")[0] == "adamw_8bit"
    assert resolve_optimizer("adamw_8bit", "cpu") == ("adamw_8bit", None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA variant needs a CUDA GPU; none here (the CPU tests above run)")
def test_qlora_trains_on_cuda_and_merges_exactly(tiny_model, tmp_path, datasets, train_config, weights, expected_merge):
    src = tiny_model("llama", hidden_size=64, intermediate_size=128)
    result = run_train(train_config(src, tmp_path / "out", method="qlora", lr=1e-2, max_steps=12, device="cuda",
                                    lora_r=R, lora_alpha=ALPHA), datasets=datasets())
    assert result.val_loss < result.val_loss_start
    merged, source = weights(tmp_path / "out"), weights(src)
    expected = expected_merge(src, tmp_path / "out" / "adapter", "cuda")
    for name in merged:
        torch.testing.assert_close(merged[name], expected.get(name, source[name]), rtol=1e-6, atol=1e-7)

