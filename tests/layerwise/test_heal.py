"""`heal --layerwise`: the calibration pass of linear and layer replacement run one decoder layer of
the reference at a time writes the tensors the in-memory pass writes, on families of every kind the
fits handle (a down projection, GPT-2's Conv1D with its positional mask, Gemma 3's post-MLP norm and
sliding/full layers, tied embeddings), with the captured states in memory or spilled to disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from downcycle.healing.run import run_heal
from downcycle.recipe import CutConfig, HealConfig
from downcycle.surgery.cut import cut

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "corpus" / "moby_dick.jsonl.gz"
FAMILIES = {"llama": {}, "gpt2": {}, "gemma3_text": {}, "llama-tied": {"tie_word_embeddings": True}}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cut_of(tmp_path_factory):
    """``cut_of(name, layers)``: a cut of a tiny 6-layer model of family ``name`` (the shipped tokenizer)."""
    from downcycle.tiny import build_tiny

    root, refs, cuts = tmp_path_factory.mktemp("lw-heal"), {}, {}

    def make(name: str, layers: str) -> Path:
        if name not in refs:
            ref = build_tiny(name.removesuffix("-tied"), root / name, vocab_size=8192, max_position_embeddings=64, **FAMILIES[name])
            for f in (ROOT / "examples" / "tokenizer").iterdir():
                shutil.copy(f, ref / f.name)
            refs[name] = ref
        key = (name, layers)
        if key not in cuts:
            cuts[key] = root / f"{name}-cut{len(cuts)}"
            cut(CutConfig(source=str(refs[name]), out=cuts[key], layers=layers, progress=False))
        return cuts[key]

    return make


def heal(cut_dir: Path, out: Path, layerwise: bool, **kw) -> object:
    return run_heal(HealConfig(model=str(cut_dir), out=out, data=str(CORPUS), samples=8, seq_len=16, batch_size=2, progress=False,
                               device="cpu", layerwise=layerwise, **kw))


def tensors(out: Path) -> dict:
    got = {}
    for f in sorted(out.glob("*.safetensors")):
        got.update(load_file(f))
    return got


def assert_same_output(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        assert ta[name].equal(tb[name]), name
    man = [json.loads((d / "downcycle.json").read_text())["outputs"] for d in (a, b)]
    assert (man[0]["layerwise"], man[1]["layerwise"]) == (False, True)
    assert man[0]["gaps"] == man[1]["gaps"]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_linear_replacement_layer_by_layer_writes_the_in_memory_tensors(cut_of, tmp_path, name):
    cut_dir = cut_of(name, "0-1,4")  # a middle gap (2-3) and the tail gap (5)
    whole = heal(cut_dir, tmp_path / "whole", False, method="linear")
    layered = heal(cut_dir, tmp_path / "layered", True, method="linear")
    assert_same_output(tmp_path / "whole", tmp_path / "layered")
    assert [g["exact_fold_error"] < 1e-5 for g in layered.gaps] == [True, True]
    assert {k: v.tolist() for k, v in layered.maps.items()} == {k: v.tolist() for k, v in whole.maps.items()}


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma3_text"])
def test_layer_replacement_layer_by_layer_trains_the_same_layers(cut_of, tmp_path, name):
    cut_dir = cut_of(name, "0,3")  # gaps 1-2 (mse) and 4-5 (the tail: kl)
    for layerwise in (False, True):
        heal(cut_dir, tmp_path / str(layerwise), layerwise, method="layer", epochs=2, precision="fp32")
    assert_same_output(tmp_path / "False", tmp_path / "True")


def test_spilled_states_heal_the_same(cut_of, tmp_path, monkeypatch):
    from downcycle.layerwise import engine

    cut_dir = cut_of("llama", "0-1,4")
    heal(cut_dir, tmp_path / "whole", False, method="linear")
    spilled = []
    monkeypatch.setattr(engine, "STATE_BUDGET", 0)  # every captured state to disk
    from downcycle.layerwise import store

    put = store.StateStore.put

    def counting(self, key, tensor):
        put(self, key, tensor)
        spilled.append(self.spilled_bytes)

    monkeypatch.setattr(store.StateStore, "put", counting)
    heal(cut_dir, tmp_path / "layered", True, method="linear")
    assert spilled and max(spilled) > 0
    assert_same_output(tmp_path / "whole", tmp_path / "layered")


def test_the_reference_never_loads_whole(cut_of, tmp_path, monkeypatch):
    """Layer by layer, at most one decoder layer of the reference holds weights at any time."""
    from downcycle.layerwise.skeleton import LayerwiseModel

    loaded, most = set(), [0]
    materialise, release = LayerwiseModel.materialise, LayerwiseModel.release

    def tracking_materialise(self, index):
        loaded.add(index)
        most[0] = max(most[0], len(loaded))
        return materialise(self, index)

    def tracking_release(self, index):
        loaded.discard(index)
        return release(self, index)

    monkeypatch.setattr(LayerwiseModel, "materialise", tracking_materialise)
    monkeypatch.setattr(LayerwiseModel, "release", tracking_release)
    monkeypatch.setattr("downcycle.loading.load_model", lambda *a, **k: pytest.fail("the whole reference was loaded"))
    heal(cut_of("llama", "0,3"), tmp_path / "out", True, method="layer", epochs=1, precision="fp32")
    assert most[0] == 1 and not loaded
