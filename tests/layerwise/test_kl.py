"""`eval --tasks loss --reference REF --layerwise`: the reference runs layer by layer too, its final
norm's output at the scored positions kept per batch, and kl_ref (value and stderr), nll, perplexity
and bits per byte equal the in-memory run's bit for bit (Llama, a Gemma-3 with sliding and full
layers, a tied Llama; windows smaller than the documents; every state spilled to disk); the
reference's layers run once for several models (cuts run together or models on their own) with the
results of separate runs; the reference gets kl_ref 0; another vocabulary is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from downcycle.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = {"llama": {}, "gemma3_text": {}, "llama-tied": {"tie_word_embeddings": True}}
# Windows of 16 tokens scored 8 at a time: documents of hundreds of tokens have many windows each.
DATA = ["--data", str(ROOT / "examples" / "corpus" / "kjv.jsonl.gz"), "--limit", "4", "--window", "16", "--stride", "8"]
METRICS = ("nll", "perplexity", "bits_per_byte", "kl_ref", "tokens", "bytes")


@pytest.fixture(scope="module")
def family(tmp_path_factory, build_eval_model):
    """``family(name)`` -> (reference (6 layers), cut 0-2, cut 0,2,4,5), the cuts written by `downcycle cut`."""
    cache = {}

    def build(name):
        if name not in cache:
            root = tmp_path_factory.mktemp("kl-" + name)
            base = name.removesuffix("-tied")
            ref = build_eval_model(root / "ref", family=base, num_hidden_layers=6, **FAMILIES[name])
            for cut, layers in (("first3", "0-2"), ("skip", "0,2,4,5")):
                assert main(["cut", str(ref), str(root / cut), "--layers", layers, "--no-progress"]) == 0
            cache[name] = (ref, root / "first3", root / "skip")
        return cache[name]

    return build


def _eval(models, out: Path, reference: Path, *how: str) -> dict[str, dict]:
    """Each model's loss metrics (name -> {metric: {"value", "stderr"}}) of one `downcycle eval`."""
    args = ["eval", *map(str, models), "--tasks", "loss", *DATA, "--reference", str(reference), "--out", str(out), "--no-progress"]
    assert main([*args, *how]) == 0
    return {Path(m).name: json.loads((out / Path(m).name / "results.json").read_text())["tasks"]["loss"]["metrics"] for m in models}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_kl_layer_by_layer_equals_in_memory(family, tmp_path, name):
    ref, cut, _ = family(name)
    whole = _eval([cut], tmp_path / "memory", ref, "--no-layerwise")["first3"]
    layered = _eval([cut], tmp_path / "layers", ref, "--layerwise")["first3"]
    assert {m: layered[m] for m in METRICS} == {m: whole[m] for m in METRICS}  # value and stderr, bit for bit
    assert whole["kl_ref"]["value"] > 0 and whole["kl_ref"]["stderr"] > 0 and whole["tokens"]["value"] > 4 * 16


@pytest.mark.parametrize("name", list(FAMILIES))
def test_spilled_states_and_rows_score_the_same(family, name):
    """Library level, in batches of at most 60 tokens (many batches): the model's states and the
    reference's rows all on disk (budget 0), the same sums as in memory, float for float."""
    import gzip

    from downcycle.evaluation.layerwise_loss import ReferenceRows
    from downcycle.evaluation.layerwise_target import LayerwiseTarget
    from downcycle.evaluation.perplexity import score_documents
    from downcycle.layerwise import open_layerwise
    from downcycle.loading import load_model, load_tokenizer

    ref, cut, _ = family(name)
    tok = load_tokenizer(ref)
    with gzip.open(DATA[1], "rt") as f:
        texts = [json.loads(next(f))["text"][:n] for n in (700, 60, 300, 5, 180)]
    docs = [[tok.bos_token_id] + tok.encode(t, add_special_tokens=False) for t in texts]
    want = score_documents(load_model(cut, dtype="float32"), docs, 16, 8, batch_tokens=60, reference=load_model(ref, dtype="float32"))
    target = LayerwiseTarget(open_layerwise(cut, dtype="float32"), budget=0)
    rows = ReferenceRows(LayerwiseTarget(open_layerwise(ref, dtype="float32"), budget=0))
    got = score_documents(target, docs, 16, 8, batch_tokens=60, reference=rows)
    assert target.last_run.spilled_bytes > 0 and rows.store.spilled_bytes > 0 and rows.target.last_run.spilled_bytes > 0
    assert got.nll == want.nll and got.kl == want.kl and sum(want.kl) > 0
    again = score_documents(LayerwiseTarget(open_layerwise(cut, dtype="float32")), docs, 16, 8, batch_tokens=60, reference=rows)
    assert rows.runs == 1 and again == got  # the same batches: the rows kept
    rows.close()
    assert rows.store is None


@pytest.mark.parametrize("name", ["llama", "gemma3_text"])
def test_reference_layers_run_once_for_several_models(family, build_eval_model, tmp_path, monkeypatch, name):
    """The reference and two cuts of it (run together, as a tree) and a model of its own: the
    reference's layers run once for all, and every model's figures are those of separate runs and
    of the in-memory run; the reference's kl_ref is 0."""
    from downcycle.evaluation.layerwise_target import LayerwiseTarget

    ref, first3, skip = family(name)
    other = build_eval_model(tmp_path / "other", family=name, seed=5, num_hidden_layers=6)
    models = [ref, first3, skip, other]
    runs = []  # the sources run on their own (a cut run together with others runs as part of its family's tree)
    finals = LayerwiseTarget.finals
    monkeypatch.setattr(LayerwiseTarget, "finals", lambda self, *a, **k: runs.append(Path(self.lw.source).resolve()) or finals(self, *a, **k))
    together = _eval(models, tmp_path / "together", ref, "--layerwise")
    assert sorted(runs) == sorted([ref.resolve(), other.resolve()])  # the reference's rows once; the other model
    whole = _eval(models, tmp_path / "memory", ref, "--no-layerwise")
    for m in models:
        runs.clear()
        alone = _eval([m], tmp_path / f"alone-{m.name}", ref, "--layerwise")[m.name]
        assert together[m.name] == alone and {k: together[m.name][k] for k in METRICS} == {k: whole[m.name][k] for k in METRICS}, m.name
        assert runs == [ref.resolve()] + ([] if m == ref else [m.resolve()])  # the reference's rows, the model; the reference alone: itself, no rows
    assert together["ref"]["kl_ref"] == {"value": 0.0, "stderr": 0.0} and together["skip"]["kl_ref"]["value"] > 0


def test_another_vocabulary_is_refused_in_one_line(family, build_eval_model, tmp_path, capsys):
    """A reference with the same tokenizer but more logits per token (as in memory), and one with
    another tokenizer (checked before any model loads)."""
    from transformers import AutoTokenizer

    from downcycle.tiny import build_tiny

    ref, cut, _ = family("llama")
    tok = AutoTokenizer.from_pretrained(ref)
    wide = build_tiny("llama", tmp_path / "wide", vocab_size=len(tok) + 64, num_hidden_layers=2, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    tok.save_pretrained(wide)
    other = build_eval_model(tmp_path / "other", bos=False)  # a tokenizer trained on the fixtures
    lines = {}
    for reference, how in ((wide, "--no-layerwise"), (wide, "--layerwise"), (other, "--layerwise")):
        args = ["eval", str(cut), "--tasks", "loss", *DATA, "--reference", str(reference), "--no-progress"]
        assert main([*args, "--out", str(tmp_path / f"{reference.name}{how}"), how]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0], err
        lines[(reference.name, how)] = err[0]
    assert lines[("wide", "--layerwise")] == lines[("wide", "--no-layerwise")] and "KL needs the same vocabulary" in lines[("wide", "--layerwise")]
    assert "tokenizer differs" in lines[("other", "--layerwise")]


def test_the_model_and_the_reference_run_the_same_way(family, monkeypatch, tmp_path):
    """Without --layerwise/--no-layerwise, a model runs layer by layer when it or the reference does not fit."""
    import dataclasses

    import downcycle.layerwise
    from downcycle.evaluation.run import _layerwise
    from downcycle.recipe import EvalConfig

    ref, cut, _ = family("llama")
    big = {ref.resolve()}
    monkeypatch.setattr(downcycle.layerwise, "fits_in_memory", lambda path, dtype, device: Path(path).resolve() not in big)
    cfg = EvalConfig(models=[str(cut)], out=tmp_path / "x", tasks="loss", reference=str(ref))
    assert _layerwise(cfg, cut, "cpu") and _layerwise(cfg, ref, "cpu")  # the reference does not fit: both
    assert not _layerwise(dataclasses.replace(cfg, layerwise=False), cut, "cpu")  # --no-layerwise: both in memory
    assert not _layerwise(dataclasses.replace(cfg, reference=None), cut, "cpu")
    big = {cut.resolve()}
    assert _layerwise(cfg, cut, "cpu") and not _layerwise(cfg, ref.parent / "skip", "cpu")
