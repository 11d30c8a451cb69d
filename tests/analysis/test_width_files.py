"""What `downcycle analyze --width` writes (scores.json for `prune --scores`, the importance plot, the
manifest's record) and its refusal of a family it cannot score, before anything loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "examples" / "tokenizer"
CORPUS = ROOT / "examples" / "corpus" / "moby_dick.jsonl.gz"


def test_analyze_width_refuses_such_a_family_before_loading_anything(tiny_model, tmp_path, capsys):
    from downcycle.cli import main

    moe = tiny_model("mixtral")  # no tokenizer beside it: the refusal must come first
    assert main(["analyze", str(moe), "--data", str(CORPUS), "--out", str(tmp_path / "o"), "--width", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "'mixtral'" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


needs_examples = pytest.mark.skipif(not (TOKENIZER / "tokenizer.json").is_file() or not CORPUS.is_file(),
                                    reason="the shipped tokenizer and corpus (examples/) are missing")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from downcycle.tiny import build_tiny

    path = build_tiny("llama", tmp_path_factory.mktemp("width") / "model", vocab_size=8192, max_position_embeddings=64,
                      num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2)
    for f in TOKENIZER.iterdir():
        shutil.copy(f, path / f.name)
    return path


@needs_examples
def test_width_scores_for_prune_and_its_files(model_dir, tmp_path):
    from downcycle.analysis.width import width_scores_for_prune, write_width_files

    pytest.importorskip("matplotlib")
    scores = width_scores_for_prune(model_dir, str(CORPUS), samples=3, seq_len=16, seed=0, device="cpu")
    assert {k: scores[k] for k in ("kind", "model_type", "num_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                                   "num_key_value_heads", "samples", "seq_len")} == {
        "kind": "width-importance", "model_type": "llama", "num_layers": 3, "hidden_size": 32, "intermediate_size": 64,
        "num_attention_heads": 8, "num_key_value_heads": 2, "samples": 3, "seq_len": 16}
    assert [len(scores[k]) for k in ("ffn", "heads", "kv_heads")] == [3, 3, 3] and len(scores["hidden"]) == 32
    assert [len(scores["ffn"][0]), len(scores["heads"][0]), len(scores["kv_heads"][0])] == [64, 8, 2]
    files = write_width_files(tmp_path, scores)
    assert files == ["scores.json", "importance.png"]
    assert json.loads((tmp_path / "scores.json").read_text()) == scores
    assert (tmp_path / "importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_examples
@pytest.mark.slow
def test_analyze_width_writes_the_scores_prune_reads(model_dir, tmp_path, capsys):
    from downcycle.analysis.width import width_scores_for_prune
    from downcycle.cli import main

    out = tmp_path / "an"
    assert main(["analyze", str(model_dir), "--data", str(CORPUS), "--out", str(out), "--keep", "2", "--samples", "5",
                 "--seq-len", "16", "--batch-size", "2", "--width", "--no-progress"]) == 0
    assert "--scores" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "width").iterdir()) == ["importance.png", "scores.json"]
    manifest = json.loads((out / "downcycle.json").read_text())
    assert "width/scores.json" in manifest["outputs"]["files"] and manifest["config"]["width"] is True
    written = json.loads((out / "width" / "scores.json").read_text())
    again = width_scores_for_prune(model_dir, str(CORPUS), samples=5, seq_len=16, seed=0, device="cpu", batch_size=5)
    for row, row_again in zip(written["ffn"], again["ffn"], strict=True):
        assert row == pytest.approx(row_again, rel=1e-5)
    assert written["hidden"] == pytest.approx(again["hidden"], rel=1e-5)
    assert json.loads((out / "plan.json").read_text())["details"]["width_scores"] == "width/scores.json"
    # without --width: no width/ directory
    assert main(["analyze", str(model_dir), "--data", str(CORPUS), "--out", str(tmp_path / "b"), "--keep", "2", "--samples", "2",
                 "--seq-len", "16", "--no-plots", "--no-progress"]) == 0
    assert not (tmp_path / "b" / "width").exists()
