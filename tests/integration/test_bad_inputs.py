"""Bad inputs of issue 24 beyond outputs (tests/integration/test_output_apart.py) and recipes
(tests/integration/test_bad_recipes.py): what the config and the corpus header already say, checked before any
model loads; silent or misleading answers made one line naming the file; options whose values start
with '-'. Each refusal: exit 1, one line naming the file, key or value, no traceback, nothing left
behind, every input byte-identical.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from downcycle import cli

ROOT = Path(__file__).resolve().parents[2]
KJV = ROOT / "examples" / "corpus" / "kjv.jsonl.gz"


@pytest.fixture(scope="module")
def env(real_model, tiny_model, tmp_path_factory):
    """A GPT-2 (a learned table of 128 positions) with the examples tokenizer, a corpus of 256-token
    sequences for both it and the Llama (rotary: no table), two cuts of the Llama."""
    from downcycle.corpus.build import build_corpus
    from downcycle.recipe import DataConfig

    root = tmp_path_factory.mktemp("bad-inputs-24")
    gpt2 = root / "gpt2"
    shutil.copytree(tiny_model("gpt2", vocab_size=8192), gpt2)
    for f in real_model.glob("tokenizer*"):
        shutil.copy2(f, gpt2 / f.name)
    long = build_corpus(DataConfig(tokenizer=str(real_model), source=[str(KJV)], out=root / "long", tokens="4K", seq_len=256,
                                   val=0.25, progress=False))
    (root / "text.jsonl").write_text('{"text": "In the beginning God created the heaven and the earth."}\n' * 80)
    for name, layers in (("cut2", "0-1"), ("cut3", "0-2")):
        assert cli.main(["cut", str(real_model), str(root / name), "--layers", layers]) == 0
    return {"M": real_model, "G": gpt2, "C": long, "R": root}


@pytest.fixture
def no_model_load(monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))


@pytest.fixture
def check(capsys, env, tmp_path, refused, tree_hash):
    """``check(line, needles, code=1)`` -> the error line: refused in one line; nothing written beside
    OUT; every input unchanged."""

    def run(line: str, needles: list[str], code: int = 1) -> str:
        out = tmp_path / "out"
        before = {k: tree_hash(v) for k, v in env.items()}
        fill = {**{k: str(v) for k, v in env.items()}, "OUT": str(out)}
        got = refused(capsys, [a.format(**fill) for a in line.split()], [n.format(**fill) for n in needles], code)
        assert not list(tmp_path.iterdir()), f"left behind: {list(tmp_path.iterdir())}"
        assert {k: tree_hash(v) for k, v in env.items()} == before
        return got

    return run


TRAIN = "train {G} --data {C} --out {OUT} --max-steps 1 --no-progress --device cpu --precision fp32"

# (id, command line, the needles of its one line)
LENGTHS = [
    ("train-seq-len-beyond-positions", TRAIN, ["{C}: seq_len 256", "{G}'s 128 positions", "n_positions", "--seq-len 128"]),
    ("distill-teacher-positions", "train {M} --data {C} --out {OUT} --method distill --teacher {G} --no-progress",
     ["{C}: seq_len 256", "--teacher {G}'s 128 positions"]),
    ("analyze-seq-len", "analyze {G} --data {R}/text.jsonl --out {OUT} --seq-len 256 --no-progress",
     ["--seq-len 256", "{G}'s 128 positions"]),
    ("prune-seq-len", "prune {G} {OUT} --ffn 16 --data {R}/text.jsonl --seq-len 256", ["--seq-len 256", "{G}'s 128 positions"]),
    ("lora-targets-empty", "train {M} --data {C} --out {OUT} --method lora --lora-targets=", ["--lora-targets ''", "empty"]),
    ("lora-targets-empty-item", "train {M} --data {C} --out {OUT} --method lora --lora-targets q_proj,", ["'q_proj,'", "empty"]),
    ("eval-task-data-mistyped", "eval {M} --tasks arc_easy --task-data {R}/tsak-data --out {OUT} --no-progress",
     ["--task-data {R}/tsak-data", "no such directory"]),
]


@pytest.mark.parametrize("case, line, needles", LENGTHS, ids=[c[0] for c in LENGTHS])
def test_what_the_files_say_is_checked_before_loading(case, line, needles, env, tmp_path, capsys, no_model_load, check):
    check(line, needles)


def test_a_rotary_model_takes_sequences_past_its_config_length(env):
    """No learned table, no hard limit: the Llama's 128 max_position_embeddings does not refuse 256."""
    from downcycle.compat import check_positions
    from downcycle.errors import DowncycleError
    from downcycle.loading import read_config

    check_positions("seq_len", 256, env["M"], read_config(env["M"]), "")
    with pytest.raises(DowncycleError, match="128 positions"):
        check_positions("seq_len", 256, env["G"], read_config(env["G"]), "")
    check_positions("seq_len", 128, env["G"], read_config(env["G"]), "")


def _results(model: Path, where: Path, config_hash: str | None = None) -> Path:
    """A results.json recording ``model`` (its path, its config.json hash unless given)."""
    from downcycle.artifacts.hashes import file_sha256
    from downcycle.evaluation.results import EvalResults, ModelInfo

    sha = config_hash or (file_sha256(model / "config.json") if (model / "config.json").is_file() else "0" * 64)
    where.mkdir(parents=True)
    return EvalResults(ModelInfo(model.name, str(model), 1, {"config.json": sha}), {}, {"tasks": "loss"}, {}, None, 0.0).write(where)


def test_card_refuses_another_models_results(env, tmp_path, capsys, check):
    results = _results(env["R"] / "cut3", env["R"] / "res-cut3")
    check(f"card {{R}}/cut2 --results {results}", [f"--results {results}", "cut3", "not of", "cut2"])
    moved = _results(env["R"] / "gone", env["R"] / "res-gone")  # a model no longer there, of another config
    check(f"card {{R}}/cut2 --results {moved}", [f"--results {moved}", "config.json differs"])
    mine = _results(env["R"] / "cut2", env["R"] / "res-cut2")
    assert cli.main(["card", str(env["R"] / "cut2"), "--results", str(mine)]) == 0
    assert "## Evaluation" in (env["R"] / "cut2" / "README.md").read_text()


def test_report_names_a_truncated_manifest(env, tmp_path, capsys, check):
    exp = env["R"] / "exp"
    shutil.copytree(env["R"] / "cut2", exp / "cut2")
    (exp / "broken").mkdir()
    (exp / "broken" / "downcycle.json").write_text('{"stage": "cut", "inputs": {')
    check("report {R}/exp --no-samples --no-cards", ["{R}/exp/broken/downcycle.json", "not valid JSON"])
    shutil.rmtree(exp)


def test_convert_names_a_pickle_that_is_not_weights_only(env, tmp_path, capsys, check):
    import torch

    src = env["R"] / "pickled"
    src.mkdir()
    shutil.copy2(env["M"] / "config.json", src / "config.json")
    torch.save({"w": torch.zeros(2), "args": argparse.Namespace(lr=1)}, src / "pytorch_model.bin")
    line = check("convert {R}/pickled {OUT}", ["{R}/pickled/pytorch_model.bin", "argparse.Namespace"])
    assert "\x1b" not in line and "weights_only=False" not in line and len(line) < 300
    shutil.rmtree(src)


def test_convert_reads_a_pickle_of_the_old_format(env, tmp_path):
    """torch.save(..., _use_new_zipfile_serialization=False): weights only, but not memory-mappable."""
    import torch
    from safetensors.torch import load_file

    src = tmp_path / "old"
    src.mkdir()
    shutil.copy2(env["M"] / "config.json", src / "config.json")
    torch.save({"w": torch.arange(4.0)}, src / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert cli.main(["convert", str(src), str(tmp_path / "st")]) == 0
    assert load_file(tmp_path / "st" / "model.safetensors")["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("argv, field, value", [
    (["train", "M", "--train-layers", "-4:"], "train_layers", "-4:"),
    (["train", "M", "--train-layers", "-4:", "--lr", "-1"], "lr", -1.0),
    (["cut", "S", "O", "--layers", "-4:"], "layers", "-4:"),
    (["cut", "S", "O", "--drop", "-2:"], "drop", "-2:"),
    (["cut", "S", "O", "--layers", "-8:-4,-2"], "layers", "-8:-4,-2"),
    (["prune", "S", "O", "--drop", "-2:"], "drop", "-2:"),
], ids=["train-layers", "negative-number", "cut-layers", "cut-drop", "cut-ranges", "prune-drop"])
def test_a_layer_spec_starting_with_a_minus_is_a_value(argv, field, value):
    assert getattr(cli.build_parser(argv[0]).parse_args(argv), field) == value


def test_a_cut_of_the_last_layers_as_written_in_the_help(env, tmp_path, capsys, check):
    import json

    assert cli.main(["cut", str(env["M"]), str(tmp_path / "last"), "--layers", "-2:"]) == 0
    assert json.loads((tmp_path / "last" / "downcycle.json").read_text())["outputs"]["kept_layers"] == [4, 5]
    shutil.rmtree(tmp_path / "last")
    check("cut {M} {OUT} --layerz 0-1", ["unrecognized arguments", "--layerz"], code=2)
