"""Several depth cuts of one reference run as a tree (``run_tree``): every cut's last state equals that
of the cut checkpoint run alone layer by layer, bit for bit (cuts that keep a first run of layers, drop
the first layer, skip layers, repeat one), and each distinct prefix of layers runs once."""

from __future__ import annotations

import pytest
import torch

from downcycle.layerwise import open_layerwise, run_layerwise, run_tree
from downcycle.layerwise.skeleton import LayerwiseModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUTS = {"first3": [0, 1, 2], "first5": [0, 1, 2, 3, 4], "no-first": [1, 2, 3, 4, 5], "skip": [0, 2, 4, 5],
        "all": [0, 1, 2, 3, 4, 5], "repeat": [0, 1, 1, 2]}


def _batches(vocab):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (4, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in one row
    return [{"input_ids": ids[i : i + 2], "attention_mask": mask[i : i + 2]} for i in (0, 2)]


def _prefixes(paths):
    return {tuple(p[:j]) for p in paths for j in range(1, len(p) + 1)}


@pytest.mark.parametrize("family,overrides", [("llama", {}), ("gemma3_text", {}), ("llama", {"tie_word_embeddings": True})],
                         ids=["llama", "gemma3_text", "llama-tied"])
def test_every_cut_of_the_tree_equals_the_cut_run_alone(tiny_model, tmp_path, monkeypatch, family, overrides):
    from downcycle.recipe import CutConfig
    from downcycle.surgery.cut import cut

    ref = tiny_model(family, **overrides)
    batches = _batches(64)
    cuts = {name: kept for name, kept in CUTS.items() if family == "llama" or name != "repeat"}
    loads = []
    materialise = LayerwiseModel.materialise
    monkeypatch.setattr(LayerwiseModel, "materialise", lambda self, i: loads.append(i) or materialise(self, i))
    got: dict[tuple, list] = {}
    visits = []

    def visit(path, b, x):
        visits.append((path, b))
        got.setdefault(path, [None] * len(batches))[b] = x.clone()

    lw = open_layerwise(ref, dtype="float32")
    run = run_tree(lw, list(cuts.values()), batches, visit)
    prefixes = _prefixes(cuts.values())
    assert sorted(visits) == sorted((p, b) for p in prefixes | {()} for b in range(len(batches)))  # each prefix run once, x_0 too
    # a layer loaded once per depth it runs at, for every prefix of that depth ending in it (layer 0 at depth 1: the recording pass)
    assert sorted(loads) == sorted(i for _, i in {(len(p), p[-1]) for p in prefixes})
    assert run.weight_bytes == max(sum(t.numel() * 4 for t in layer.state_dict().values()) for layer in lw.layers)
    for name, kept in cuts.items():
        path = cut(CutConfig(source=str(ref), out=tmp_path / name, layers=",".join(map(str, kept)), progress=False)).out
        alone = open_layerwise(path, dtype="float32")
        last = {}
        run_layerwise(alone, batches, lambda l, b, x: last.__setitem__(b, x.clone()) if l == len(kept) else None)
        for b in range(len(batches)):
            assert torch.equal(got[tuple(kept)][b], last[b]), (family, name, b)


def test_a_spilled_tree_gives_the_same_states(tiny_model, tmp_path):
    ref = tiny_model("gemma3_text")
    batches = _batches(64)
    paths = [CUTS["first3"], CUTS["no-first"], CUTS["skip"]]
    runs = []
    for budget in (None, 0):
        got = {}
        opts = {} if budget is None else {"budget": 0, "spill_dir": tmp_path}
        run = run_tree(open_layerwise(ref, dtype="float32"), paths, batches, lambda p, b, x: got.__setitem__((p, b), x.clone()), **opts)
        runs.append((got, run))
    (memory, _), (spilled, run) = runs
    assert run.spilled_bytes > 0 and run.state_bytes == 0
    assert memory.keys() == spilled.keys() and all(torch.equal(memory[k], spilled[k]) for k in memory)
    assert not any(tmp_path.iterdir())


def test_layers_out_of_range_are_refused(tiny_model):
    from downcycle.errors import DowncycleError

    with pytest.raises(DowncycleError, match="out of range"):
        run_tree(open_layerwise(tiny_model("llama"), dtype="float32"), [[0, 6]], _batches(64), lambda p, b, x: None)
