"""Teacher and student vocabularies (downcycle.compat.check_distill): a teacher sharing the student's
tokenizer but padded to more embedding rows is distilled from over the shared ids, exactly as its
truncation would be; a teacher with another tokenizer is refused from its files alone. And the
loss plot of a distillation run: its LM term beside validation loss, its KL on an axis of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from downcycle.compat import check_distill, tokenizer_files
from downcycle.errors import DowncycleError

PADDED = 8192 + 64  # the student's 8192 rows padded, as Qwen2.5-7B's 152064 pads its 151665-token tokenizer
TOKENIZER = Path(__file__).resolve().parents[2] / "examples" / "tokenizer"


@pytest.fixture(scope="module")
def padded_teacher(tiny_model):
    """A 2-layer teacher with examples/tokenizer and 8256 embedding rows, whose 64 padding rows of
    the output layer are large, so a KL that included them would differ a lot."""
    from safetensors.torch import load_file, save_file

    path = tiny_model("llama", vocab_size=PADDED, num_hidden_layers=2)
    weights = load_file(str(path / "model.safetensors"))
    weights["lm_head.weight"][8192:] *= 50.0
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    for f in TOKENIZER.iterdir():
        shutil.copy2(f, path / f.name)
    return path


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def test_a_padded_teacher_over_the_same_tokenizer_shares_the_tokenizers_ids(real_model, padded_teacher):
    vocab = check_distill(real_model, _config(real_model), padded_teacher, _config(padded_teacher))
    assert vocab.shared == 8192 and "8192 shared token ids" in " ".join(vocab.notes)
    same = check_distill(real_model, _config(real_model), real_model, _config(real_model))
    assert same.shared is None and same.notes == []


def test_a_teacher_with_another_tokenizer_is_refused(real_model, tmp_path, train_tokenizer):
    from downcycle.tiny import build_tiny

    other = tmp_path / "other"
    build_tiny("llama", other, vocab_size=len(train_tokenizer(other, vocab_size=2000)), num_hidden_layers=2)
    with pytest.raises(DowncycleError, match="tokenizer differs from the student's"):
        check_distill(real_model, _config(real_model), other, _config(other))
    # the same vocabulary size is not enough: here the ids mean other tokens
    with pytest.raises(DowncycleError, match="tokenizer differs"):
        check_distill(other, {**_config(other), "vocab_size": 8192}, real_model, _config(real_model))


def test_without_tokenizer_files_only_equal_sizes_pass(tiny_model):
    a, b = tiny_model("llama"), tiny_model("llama", vocab_size=160)
    assert tokenizer_files(a) is None
    assert check_distill(a, _config(a), a, _config(a)).shared is None
    with pytest.raises(DowncycleError, match="no tokenizer.json to show they share a tokenizer"):
        check_distill(a, _config(a), b, _config(b))


def test_the_vocabulary_hash_ignores_how_the_file_was_saved(tmp_path):
    doc = json.loads((TOKENIZER / "tokenizer.json").read_text())
    doc["truncation"] = {"max_length": 7, "strategy": "LongestFirst", "stride": 0, "direction": "Right"}
    doc["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in doc["model"]["merges"]]  # the older format
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc, indent=1))
    original, resaved = tokenizer_files(TOKENIZER), tokenizer_files(tmp_path)
    assert original.file_sha256 != resaved.file_sha256
    assert original.vocab_sha256 == resaved.vocab_sha256 and original.size == resaved.size == 8192
    doc["model"]["vocab"]["zzz-new"] = 8192
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    assert tokenizer_files(tmp_path).vocab_sha256 != original.vocab_sha256


def test_distilling_from_a_padded_teacher_equals_distilling_from_its_truncation(real_model, padded_teacher, one_torch_thread):
    """The KL over the shared ids: the padded teacher gives the loss its first 8192 rows give."""
    from transformers import AutoModelForCausalLM

    from downcycle.training.methods import DistillMethod

    student = AutoModelForCausalLM.from_pretrained(real_model).eval()
    padded = AutoModelForCausalLM.from_pretrained(padded_teacher).eval()
    config = padded.config.__class__(**{**padded.config.to_dict(), "vocab_size": 8192})
    truncated = AutoModelForCausalLM.from_config(config).eval()
    state = {k: (v[:8192] if k in ("model.embed_tokens.weight", "lm_head.weight") else v) for k, v in padded.state_dict().items()}
    truncated.load_state_dict(state)
    batch = {"input_ids": torch.randint(3, 8192, (2, 12), generator=torch.Generator().manual_seed(0))}
    losses = {}
    for name, teacher, shared in (("padded", padded, 8192), ("truncated", truncated, None)):
        method = DistillMethod()
        method.attach(teacher, alpha=0.5, temperature=2.0, shared_vocab=shared)
        with torch.no_grad():
            losses[name] = method.loss(student, batch)
    torch.testing.assert_close(losses["padded"].parts["kl"], losses["truncated"].parts["kl"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses["padded"].total, losses["truncated"].total, rtol=1e-5, atol=1e-5)
    with_padding = DistillMethod()  # the padding rows left in would change the KL: the test can tell
    with_padding.attach(padded, alpha=0.5, temperature=2.0)
    with pytest.raises(DowncycleError, match="disagree on the vocabulary"):
        with_padding.loss(student, batch)


def test_train_distills_from_a_padded_teacher(real_model, real_corpus, padded_teacher, tmp_path, one_torch_thread, train_config):
    from downcycle.training import run_train

    out = tmp_path / "out"
    result = run_train(train_config(real_model, out, data=real_corpus, method="distill", teacher=str(padded_teacher), max_steps=2,
                                    device="cpu", eval_max_seqs=4))
    assert result.steps == 2 and any("8192 shared token ids" in n for n in result.notes)
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert all(r["kl"] > 0 and abs(r["loss"] - (0.5 * r["lm_loss"] + 0.5 * r["kl"])) < 1e-4 for r in train)
    teacher = json.loads((out / "downcycle.json").read_text())["inputs"]["teacher"]  # recorded by the method itself
    assert teacher["source"] == str(padded_teacher) and teacher["path"] == str(padded_teacher.resolve())
    assert teacher["hashes"]["config.json"] and teacher["hashes"]["shard_headers"]


def test_the_loss_plot_of_a_distillation_run_puts_its_lm_term_beside_validation(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from downcycle.artifacts.loss_log import plot_losses

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    records = [{"step": s, "split": "train", "tokens": 100 * s, "loss": 2.5 - 0.1 * s, "lm_loss": 4.9 - 0.1 * s, "kl": 0.1 + 0.01 * s}
               for s in range(1, 5)] + [{"step": 4, "split": "val", "tokens": 400, "loss": 4.8}]
    assert plot_losses(records, tmp_path / "loss.png")
    main, kl_axis = saved[0].axes
    curves = {line.get_label(): list(line.get_ydata()) for line in main.get_lines()}
    train = records[:4]
    assert curves == {"train LM loss": [r["lm_loss"] for r in train], "val loss": [4.8]}  # not the objective (2.4 .. 2.1)
    assert [list(line.get_ydata()) for line in kl_axis.get_lines()] == [[r["kl"] for r in train]]
    saved.clear()
    plot_losses([{"step": 1, "split": "train", "tokens": 10, "loss": 3.0}], tmp_path / "plain.png")  # not distillation: one axis
    assert len(saved[0].axes) == 1 and [line.get_label() for line in saved[0].axes[0].get_lines()] == ["train loss"]
