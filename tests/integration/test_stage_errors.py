"""Bad input to every stage but `cut` (tests/surgery/test_cut_errors.py has those): exit status 1, one line
on stderr naming the file, key or value at fault, no traceback, no output left behind (an existing
output untouched). Cases marked ``early`` must be refused before any model is loaded.

The battery's classes: missing, empty or malformed files (sources, corpora, recipes, task data,
results, manifests, pickles); inputs that do not fit together (tokenizers, vocabularies, task
fields, context lengths); out-of-range and mistyped values and names (layers, counts, tasks,
methods, strategies, recipe keys and registry names, --depths); outputs that exist. Beside it:
tests/integration/test_output_apart.py (an output that is, holds or sits in an input, for every command and
input), tests/integration/test_bad_recipes.py (every name a recipe gives, with and without --dry-run) and
tests/integration/test_bad_inputs.py (position tables, LoRA targets, another model's results, options whose
values start with '-')."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from downcycle import cli

ROOT = Path(__file__).resolve().parents[2]
KJV = ROOT / "examples" / "corpus" / "kjv.jsonl.gz"


@pytest.fixture(scope="module")
def env(real_model, real_corpus, tmp_path_factory, one_torch_thread, train_tokenizer):
    """Every input the cases use: good ones (model M, its corpus C), and bad ones."""
    from downcycle.corpus.build import build_corpus
    from downcycle.recipe import DataConfig
    from downcycle.tiny import build_tiny

    root = tmp_path_factory.mktemp("bad-inputs")
    other = root / "other"  # another tokenizer (2000 tokens), a model sized for it
    build_tiny("llama", other, vocab_size=len(train_tokenizer(other, vocab_size=2000)), num_hidden_layers=2)
    other_corpus = build_corpus(DataConfig(tokenizer=str(other), source=[str(KJV)], out=root / "other-corpus", tokens="4K",
                                           seq_len=64, val=0.25, progress=False))
    notok = root / "notok"
    shutil.copytree(real_model, notok, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    binmodel = root / "binmodel"
    shutil.copytree(real_model, binmodel, ignore=shutil.ignore_patterns("*.safetensors"))
    import torch

    torch.save(torch.zeros(3), binmodel / "pytorch_model.bin")  # a pickle, and not even a state dict
    unsafe = root / "unsafe"
    shutil.copytree(binmodel, unsafe)
    import argparse

    torch.save({"w": torch.zeros(3), "args": argparse.Namespace(lr=1)}, unsafe / "pytorch_model.bin")  # not weights only
    files = {"bad.jsonl": '{"text": "a"}\nnot json\n', "nofield.jsonl": '{"body": "hello world"}\n' * 5, "empty.txt": "",
             "bad.yaml": "reference: [unclosed\n", "unk.yaml": f"reference: {real_model}\nbogus: 1\n",
             "results.json": "{not json", "small.jsonl": '{"text": "In the beginning God created the heaven and the earth."}\n' * 20}
    for name, text in files.items():
        (root / name).write_text(text)
    recipe = f"reference: {real_model}\nout: {root / 'never'}\ndata: {{source: {KJV}}}\n"
    (root / "badcut.yaml").write_text(recipe + "cuts:\n  - {name: a, layers: '0-9'}\n")
    (root / "nokeep.yaml").write_text(recipe + "cuts:\n  - {name: a, layers: '0-3'}\n")
    (root / "ok.yaml").write_text(recipe + "cuts:\n  - {name: a, keep: 4}\n")
    (root / "badtask.yaml").write_text(recipe + "cuts:\n  - {name: a, keep: 4}\neval: {tasks: 'loss,helaswag'}\n")
    (root / "badmethod.yaml").write_text(recipe + "cuts:\n  - {name: a, keep: 4}\nheal:\n  - {method: ful}\n")
    (root / "torn" / "cut").mkdir(parents=True)
    (root / "torn" / "cut" / "downcycle.json").write_text('{"stage": "cut", "inputs"')
    for name, text in {"hs-fields": '{"ctx": "a"}\n', "hs-json": '{"ctx": "a", \n'}.items():
        (root / name).mkdir()
        (root / name / "hellaswag.validation.jsonl").write_text(text)
    (root / "empty-dir").mkdir()
    cut = root / "cut"
    assert cli.main(["cut", str(real_model), str(cut), "--layers", "0-3"]) == 0
    return {"M": real_model, "C": real_corpus, "R": root, "OTHER": other, "OC": other_corpus, "NOTOK": notok,
            "BIN": binmodel, "UNSAFE": unsafe, "CUT": cut, "KJV": KJV}


@pytest.fixture
def no_model_load(monkeypatch):
    """Make loading any model fail the test: what must be refused before that."""
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


TRAIN = "train {M} --data {C} --out {OUT} --max-steps 1 --no-progress --device cpu --precision fp32"
EVAL = "eval {M} --out {OUT} --no-progress"
ANALYZE = "analyze {M} --data {KJV} --out {OUT} --no-progress --samples 2 --seq-len 16"
DATA = "data --tokenizer {M} --source {KJV} --out {OUT} --no-progress --seq-len 64"

# (id, command line, text the error line must contain, refused before any model loads)
CASES = [
    ("data-missing-source", "data --tokenizer {M} --source {R}/nope.txt --out {OUT}", ["nope.txt", "no such file"], True),
    ("data-bad-json", "data --tokenizer {M} --source {R}/bad.jsonl --out {OUT} --no-progress", ["bad.jsonl:2", "not valid JSON"], True),
    ("data-no-text-field", "data --tokenizer {M} --source {R}/nofield.jsonl --out {OUT} --no-progress", ["nofield.jsonl", "'text'"], True),
    ("data-empty-source", "data --tokenizer {M} --source {R}/empty.txt --out {OUT} --no-progress", ["empty.txt", "no documents"], True),
    ("data-tokens-not-a-count", DATA + " --tokens abc", ["--tokens", "'abc'"], True),
    ("data-shard-size", DATA + " --shard-size xyz", ["--shard-size", "'xyz'"], True),
    ("data-weights-mismatch", DATA + " --source {KJV} --weights 1", ["--weights", "1 weights for 2 sources"], True),
    ("data-too-few-tokens", "data --tokenizer {M} --source {R}/small.jsonl --out {OUT} --no-progress --seq-len 64 --tokens 1M",
     ["too few tokens", "small.jsonl"], True),
    ("data-corpus-as-text", "data --tokenizer {M} --source {C} --out {OUT}", ["{C}", "corpus of token ids"], True),
    ("data-no-tokenizer", "data --tokenizer {NOTOK} --source {KJV} --out {OUT}", ["notok", "tokenizer"], True),
    ("data-seq-len", DATA + " --seq-len 1", ["--seq-len", "1"], True),
    # the two of issue 17
    ("train-distill-other-tokenizer", TRAIN + " --method distill --teacher {OTHER}", ["--teacher", "other", "tokenizer differs"], True),
    ("train-resume-nothing", TRAIN + " --resume", ["--resume", "{OUT}", "nothing to resume"], True),
    ("train-corpus-vocab-too-big", "train {OTHER} --data {C} --out {OUT} --no-progress", ["8192-token vocabulary", "2000"], True),
    ("train-corpus-other-tokenizer", "train {M} --data {OC} --out {OUT} --no-progress", ["other-corpus", "another tokenizer"], True),
    ("train-not-a-corpus", "train {M} --data {R}/empty-dir --out {OUT}", ["empty-dir", "not a corpus directory"], True),
    ("train-bin-weights", "train {BIN} --data {C} --out {OUT} --no-progress", ["binmodel", "downcycle convert"], True),
    ("train-unknown-method", TRAIN + " --method nope", ["--method", "'nope'"], True),
    ("train-distill-no-teacher", TRAIN + " --method distill", ["--teacher"], True),
    ("train-distill-teacher-missing", TRAIN + " --method distill --teacher {R}/nope", ["nope", "no such model directory"], True),
    ("train-axolotl-bad-yaml", TRAIN + " --axolotl {R}/bad.yaml", ["bad.yaml", "YAML"], True),
    ("train-negative-lr", TRAIN + " --lr -1", ["--lr"], True),
    ("train-bad-layers", TRAIN + " --train-layers 0-9", ["'0-9'", "layer 9"], True),
    ("train-layers-from-the-end", TRAIN + " --train-layers -9:", ["'-9:'"], True),
    ("eval-unknown-task", EVAL + " --tasks nope", ["'nope'", "unknown task"], True),
    ("eval-loss-without-data", EVAL + " --tasks loss", ["--data"], True),
    ("eval-corpus-vocab-too-big", "eval {OTHER} --out {OUT} --data {C} --no-progress", ["8192-token vocabulary", "2000"], True),
    ("eval-corpus-other-tokenizer", EVAL + " --data {OC}", ["other-corpus", "another tokenizer"], True),
    ("eval-task-items-lack-fields", EVAL + " --tasks hellaswag --task-data {R}/hs-fields", ["hellaswag.validation.jsonl", "'ctx_a'"], True),
    ("eval-task-file-bad-json", EVAL + " --tasks hellaswag --task-data {R}/hs-json", ["hellaswag.validation.jsonl:1", "JSON"], True),
    ("eval-task-file-missing", EVAL + " --tasks arc_easy --task-data {R}/empty-dir", ["empty-dir", "arc_easy"], True),
    ("eval-text-without-field", EVAL + " --data {R}/nofield.jsonl", ["nofield.jsonl", "'text'"], True),
    ("eval-model-without-tokenizer", "eval {NOTOK} --out {OUT} --data {C} --no-progress", ["notok", "tokenizer"], True),
    ("eval-second-model-missing", "eval {M} {R}/nope --out {OUT} --data {C} --no-progress", ["nope", "no such model directory"], True),
    ("eval-bin-weights", "eval {BIN} --out {OUT} --data {C} --no-progress", ["binmodel", "downcycle convert"], True),
    ("eval-limit-zero", EVAL + " --data {C} --limit 0", ["--limit", "0"], True),
    ("eval-task-data-mistyped", EVAL + " --tasks arc_easy --task-data {R}/emtpy-dir", ["--task-data", "emtpy-dir", "no such directory"], True),
    ("train-lora-targets-empty", TRAIN + " --method lora --lora-targets=", ["--lora-targets ''"], True),
    ("eval-gsm8k-context-too-short", "eval {OTHER} --out {OUT} --tasks gsm8k --task-data " + str(ROOT / "tests" / "fixtures" / "eval"),
     ["gsm8k", "maximum length 128"], True),
    ("analyze-missing-data", "analyze {M} --data {R}/nope.txt --out {OUT}", ["nope.txt"], True),
    ("analyze-keep-too-many", ANALYZE + " --keep 50", ["--keep", "'50'"], True),
    ("analyze-unknown-strategy", ANALYZE + " --strategy nope", ["'nope'", "strategy"], True),
    ("analyze-other-tokenizer", ANALYZE + " --tokenizer {OTHER}", ["--tokenizer", "other", "not the tokenizer of"], True),
    ("analyze-corpus-as-text", "analyze {M} --data {C} --out {OUT}", ["corpus of token ids"], True),
    ("analyze-empty-data", "analyze {M} --data {R}/empty.txt --out {OUT}", ["empty.txt", "no documents"], True),
    ("analyze-bin-weights", "analyze {BIN} --data {KJV} --out {OUT}", ["binmodel", "downcycle convert"], True),
    ("run-missing-recipe", "run {R}/nope.yaml --out {OUT}", ["nope.yaml"], True),
    ("run-bad-yaml", "run {R}/bad.yaml --out {OUT}", ["bad.yaml", "YAML"], True),
    ("run-unknown-key", "run {R}/unk.yaml --out {OUT}", ["unk.yaml", "bogus"], True),
    ("run-layers-out-of-range", "run {R}/badcut.yaml --out {OUT}", ["badcut.yaml", "cuts[0].layers", "'0-9'"], True),
    ("run-from-unknown-stage", "run {R}/ok.yaml --out {OUT} --from nope", ["--from", "'nope'"], True),
    ("run-unknown-task", "run {R}/badtask.yaml --out {OUT}", ["badtask.yaml", "eval.tasks", "'helaswag'"], True),
    ("run-unknown-method", "run {R}/badmethod.yaml --out {OUT}", ["badmethod.yaml", "heal[0].method", "'ful'"], True),
    ("sweep-depth-too-deep", "sweep {R}/ok.yaml --out {OUT} --depths 99", ["--depths '99'"], True),
    ("sweep-without-keep", "sweep {R}/nokeep.yaml --out {OUT}", ["nokeep.yaml", "keep"], True),
    ("sweep-empty-depths", "sweep {R}/ok.yaml --out {OUT} --depths ,", ["--depths"], True),
    ("report-not-a-directory", "report {R}/nope", ["nope", "not a directory"], True),
    ("report-no-models", "report {R}/empty-dir", ["empty-dir", "no models"], True),
    ("report-zero-tokens", "report {R}/empty-dir --new-tokens 0", ["--new-tokens"], True),
    ("report-torn-manifest", "report {R}/torn", ["torn/cut/downcycle.json", "not valid JSON"], True),
    ("card-not-a-downcycle-model", "card {M}", ["downcycle.json"], True),
    ("card-results-missing", "card {CUT} --results {R}/nope.json", ["nope.json", "not found"], True),
    ("card-results-bad-json", "card {CUT} --results {R}/results.json", ["results.json", "not valid JSON"], True),
    ("generate-missing-model", "generate {R}/nope hello", ["nope", "no such model directory"], True),
    ("generate-bad-temperature", "generate {M} hello --temperature -1", ["--temperature", "-1"], True),
    ("generate-prompt-file-missing", "generate {M} --prompt-file {R}/nope.txt", ["nope.txt"], True),
    ("generate-bin-weights", "generate {BIN} hello", ["binmodel", "downcycle convert"], True),
    ("generate-no-tokenizer", "generate {NOTOK} hello --max-new-tokens 2 --device cpu", ["notok", "tokenizer"], False),
    ("convert-missing", "convert {R}/nope {OUT}", ["nope", "no such model directory"], True),
    ("convert-no-bin", "convert {M} {OUT}", ["pytorch_model"], True),
    ("convert-not-a-state-dict", "convert {BIN} {OUT}", ["pytorch_model.bin", "not a state dict"], True),
    ("convert-not-weights-only", "convert {UNSAFE} {OUT}", ["unsafe/pytorch_model.bin", "argparse.Namespace"], True),
]


def _argv(template: str, env: dict, out: Path) -> list[str]:
    return template.format(**{k: str(v) for k, v in env.items()}, OUT=str(out)).split()


def _refused(capsys, argv: list[str], needles: list[str]) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (code, err)
    assert len(lines) == 1 and lines[0].startswith("downcycle: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _nothing_left(out: Path) -> None:
    assert not out.exists()
    left = [p.name for p in out.parent.iterdir() if p.name.startswith((f".{out.name}.", f"{out.name}."))]
    assert not left, f"left behind: {left}"


@pytest.mark.parametrize("case, template, needles, early", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_leaving_nothing(case, template, needles, early, env, tmp_path, capsys, request):
    if early:
        request.getfixturevalue("no_model_load")
    out = tmp_path / "out"
    needles = [n.format(**{k: str(v) for k, v in env.items()}, OUT=str(out)) for n in needles]
    _refused(capsys, _argv(template, env, out), needles)
    _nothing_left(out)


@pytest.mark.parametrize("template", [DATA + " --tokens 8K", TRAIN, EVAL + " --data {C}", ANALYZE, "convert {BIN} {OUT}"],
                         ids=["data", "train", "eval", "analyze", "convert"])
def test_an_existing_output_is_refused_and_left_intact(template, env, tmp_path, capsys, no_model_load):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _refused(capsys, _argv(template, env, out), [str(out), "already exists", "--force"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_resume_of_a_run_directory_without_checkpoint_names_it(env, tmp_path, capsys, no_model_load):
    """A run killed before its first checkpoint leaves OUT.run/ with logs only: nothing to resume."""
    out, run_dir = tmp_path / "out", tmp_path / "out.run"
    run_dir.mkdir()
    (run_dir / "train_log.jsonl").write_text(json.dumps({"step": 1, "split": "train", "loss": 5.0, "tokens": 64}) + "\n")
    _refused(capsys, _argv(TRAIN + " --resume", env, out), [str(run_dir), "holds no checkpoint"])
    assert not out.exists() and (run_dir / "train_log.jsonl").is_file()


def test_the_battery_covers_every_command_but_cut():
    covered = {c[1].split()[0] for c in CASES}
    assert covered >= {"data", "train", "eval", "analyze", "run", "sweep", "report", "card", "generate", "convert"}, covered
    assert covered <= set(cli.COMMANDS) and len(CASES) >= 40
