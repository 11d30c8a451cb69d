"""``downcycle heal``: linear replacement and layer replacement of a depth cut's gaps, checked against
independent computations on the reference's own states (float32 models, float64 fits)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from downcycle import cli
from downcycle.healing.gaps import Gap, find_gaps
from downcycle.healing.run import run_heal
from downcycle.recipe import CutConfig, HealConfig
from downcycle.surgery.cut import cut

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "examples" / "tokenizer"
CORPUS = ROOT / "examples" / "corpus" / "moby_dick.jsonl.gz"
SAMPLES, SEQ = 16, 24
# families whose MLP output joins the residual stream as is: the fold is exact
LINEAR_FAMILIES = ["llama", "qwen2", "phi3", "gpt2", "gpt_neox", "mistral"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def with_tokenizer(path: Path) -> Path:
    for f in TOKENIZER.iterdir():
        shutil.copy(f, path / f.name)
    return path


@pytest.fixture(scope="module")
def ref_of(tmp_path_factory):
    """``ref_of(family, **overrides)``: a tiny 6-layer model of ``family`` with the shipped tokenizer."""
    from downcycle.tiny import build_tiny

    root, cache = tmp_path_factory.mktemp("heal-ref"), {}

    def make(family: str, **overrides) -> Path:
        key = family + repr(sorted(overrides.items()))
        if key not in cache:
            cache[key] = with_tokenizer(build_tiny(family, root / f"{family}-{len(cache)}", vocab_size=8192,
                                                   max_position_embeddings=64, **overrides))
        return cache[key]

    return make


def heal(cut_dir: Path, out: Path, **kw) -> object:
    base = {"model": str(cut_dir), "out": out, "data": str(CORPUS), "samples": SAMPLES, "seq_len": SEQ, "progress": False,
            "ridge": 0.0, "device": "cpu"}
    return run_heal(HealConfig(**{**base, **kw}))


def make_cut(ref: Path, out: Path, layers: str) -> Path:
    cut(CutConfig(source=str(ref), out=out, layers=layers, progress=False))
    return out


def windows(ref: Path) -> torch.Tensor:
    from downcycle.corpus.calibration import model_calibration

    return model_calibration(ref, str(CORPUS), samples=SAMPLES, seq_len=SEQ)[0].input_ids


@pytest.fixture(scope="module")
def reference_states(decoder_layers):
    """``reference_states(ref, ids, layer_inputs, mlp_of)`` -> inputs of layers and MLP outputs of the
    reference, by hooks written here (not the healing module's)."""
    from transformers import AutoModelForCausalLM

    def states(ref: Path, ids: torch.Tensor, layer_inputs: list[int], mlp_of: list[int]) -> dict:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32).eval()
        layers = decoder_layers(model)[2]
        got: dict = {}
        hooks = [layers[i].register_forward_pre_hook(lambda m, a, k, i=i: got.__setitem__(("in", i), (a[0] if a else k["hidden_states"])),
                                                     with_kwargs=True)
                 for i in layer_inputs]
        for i in mlp_of:
            mlp = layers[i].mlp
            hooks.append(mlp.register_forward_hook(
                lambda m, a, o, i=i: got.__setitem__(("mlp", i), o[0] if isinstance(o, tuple) else o)))
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
        for h in hooks:
            h.remove()
        return {k: v.double() for k, v in got.items()}

    return states


def test_find_gaps():
    assert find_gaps([0, 1, 4, 5], 8) == [Gap(2, 4, 1, False), Gap(6, 8, 5, True)]
    assert find_gaps([0, 1, 2], 3) == []
    for bad, needle in (([1, 2], "drops layer 0"), ([0, 2, 2], "increasing"), ([0, 3, 1], "increasing")):
        with pytest.raises(Exception, match=needle):
            find_gaps(bad, 6)


@pytest.mark.parametrize("family", LINEAR_FAMILIES)
def test_linear_map_is_the_least_squares_solution_and_folds_exactly(family, ref_of, tmp_path, reference_states, decoder_layers):
    """T equals an independent least-squares solution on the same activations (1e-6 relative, float64); the
    healed model's state entering the first layer after the gap equals R + X·T on the calibration tokens."""
    from transformers import AutoModelForCausalLM

    ref = ref_of(family)
    result = heal(make_cut(ref, tmp_path / "cut", "0-1,4-5"), tmp_path / "healed")
    ids = windows(ref)
    s = reference_states(ref, ids, [2, 4], [1])
    x = s[("mlp", 1)].reshape(-1, s[("mlp", 1)].shape[-1])
    r = s[("in", 2)].reshape(x.shape) - x
    y = s[("in", 4)].reshape(x.shape) - r
    t_lstsq = torch.linalg.lstsq(x, y).solution
    t = result.maps["2-3"]
    assert (t - t_lstsq).norm() / t_lstsq.norm() < 1e-6
    healed = AutoModelForCausalLM.from_pretrained(tmp_path / "healed", dtype=torch.float32).eval()
    assert healed.config.get_text_config().num_hidden_layers == 4
    got = {}
    layers = decoder_layers(healed)[2]
    h = layers[2].register_forward_pre_hook(lambda m, a, k: got.__setitem__("in", a[0] if a else k["hidden_states"]), with_kwargs=True)
    with torch.no_grad():
        healed(input_ids=ids, use_cache=False)
    h.remove()
    expected = (r + x @ t).reshape(got["in"].shape)
    torch.testing.assert_close(got["in"].double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    # and the plain cut is measurably off: the test can fail
    assert (s[("in", 2)] - expected).abs().max() > 1e-2 * expected.abs().max()


def test_a_gap_of_identity_layers_gives_the_identity_and_unchanged_logits(tmp_path, ref_of, decoder_layers):
    from transformers import AutoModelForCausalLM

    from downcycle.tiny import build_tiny

    ref = with_tokenizer(build_tiny("llama", tmp_path / "ref", vocab_size=8192, max_position_embeddings=64))
    model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32)
    for i in (2, 3):  # zero output projections: the layer adds nothing to the residual stream
        layer = decoder_layers(model)[2][i]
        layer.self_attn.o_proj.weight.data.zero_()
        layer.mlp.down_proj.weight.data.zero_()
    model.save_pretrained(ref)
    plain = make_cut(ref, tmp_path / "cut", "0-1,4-5")
    result = heal(plain, tmp_path / "healed")
    torch.testing.assert_close(result.maps["2-3"], torch.eye(32, dtype=torch.float64), atol=1e-6, rtol=0)
    ids = windows(ref)[:2]
    a = AutoModelForCausalLM.from_pretrained(plain, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "healed", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(b(ids).logits, a(ids).logits, atol=1e-4, rtol=1e-4)


def test_the_tail_gap_and_the_manifest(ref_of, tmp_path):
    ref = ref_of("llama")
    result = heal(make_cut(ref, tmp_path / "cut", "0-3"), tmp_path / "healed", ridge=1e-4)
    man = json.loads((tmp_path / "healed" / "downcycle.json").read_text())
    assert man["stage"] == "heal" and man["outputs"]["method"] == "linear"
    (gap,) = man["outputs"]["gaps"]
    assert gap["tail"] and gap["gap"] == "4-5" and gap["residual_after"] < gap["residual_before"]
    assert gap["lambda"] > 0 and gap["tokens"] == SAMPLES * SEQ
    assert man["outputs"]["calibration"]["tokens"] == SAMPLES * SEQ
    assert man["outputs"]["healed_tensors"] == ["model.layers.3.mlp.down_proj.weight"]
    assert "reference" in man["inputs"] and "Healed" in (tmp_path / "healed" / "README.md").read_text()
    assert result.layers == [0, 1, 2, 3]


def test_layer_replacement_changes_only_its_layer_and_lowers_its_own_mse(ref_of, tmp_path):
    from safetensors.torch import load_file

    ref = ref_of("llama")
    result = heal(make_cut(ref, tmp_path / "cut", "0-1,5"), tmp_path / "healed", method="layer", loss="mse", epochs=4, lr=3e-3,
                  init="first")
    assert result.layers == [0, 1, 2, 5]  # the gap 2-4 replaced by one layer, initialised from layer 2, at its place
    (gap,) = result.gaps
    assert gap["held_out_after"]["mse"] < gap["held_out_before"]["mse"]
    same = make_cut(ref, tmp_path / "same-layers", "0-2,5")
    a, b = load_file(same / "model.safetensors"), load_file(tmp_path / "healed" / "model.safetensors")
    assert a.keys() == b.keys()
    changed = sorted(k for k in a if not torch.equal(a[k], b[k]))
    assert changed and all(k.startswith("model.layers.2.") for k in changed)


def test_layer_replacement_with_the_kl_loss_on_a_gemma3_tail(ref_of, tmp_path):
    """Sliding and full layers: the replacement keeps its place's attention type; the KL through the frozen head falls."""
    ref = ref_of("gemma3_text")
    result = heal(make_cut(ref, tmp_path / "cut", "0-2"), tmp_path / "healed", method="layer", epochs=3, lr=3e-3)
    (gap,) = result.gaps
    assert gap["loss"] == "kl" and gap["held_out_after"]["loss"] < gap["held_out_before"]["loss"]
    config = json.loads((tmp_path / "healed" / "config.json").read_text())
    source = json.loads((ref / "config.json").read_text())
    assert result.layers == [0, 1, 2, 5]  # the replacement starts as the gap's last layer, 5, at its place
    assert config["layer_types"] == [source["layer_types"][i] for i in (0, 1, 2, 5)] and config["layer_types"][3] == "full_attention"


def _refused(capsys, argv: list[str], needle: str) -> None:
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("family", ["gemma3_text", "gemma2", "olmo2"])
def test_a_normalised_mlp_output_gets_a_diagonal_map_folded_into_its_norm(family, ref_of, tmp_path, decoder_layers):
    """Where the MLP output is normalised before the residual add (Gemma's (1 + w) RMSNorm, OLMo 2's w),
    T is per channel: equal to each channel's own least squares on X = the norm's output (hooked here),
    and the healed model's state after the kept layer equals R + X·diag(t) on the calibration tokens."""
    from transformers import AutoModelForCausalLM

    ref = ref_of(family)
    result = heal(make_cut(ref, tmp_path / "cut", "0-1,4-5"), tmp_path / "healed")
    model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32).eval()
    layers, ids, got = decoder_layers(model)[2], windows(ref), {}
    hooks = [layers[1].post_feedforward_layernorm.register_forward_hook(lambda m, a, o: got.__setitem__("x", o)),
             *(layers[i].register_forward_pre_hook(lambda m, a, k, i=i: got.__setitem__(i, a[0] if a else k["hidden_states"]),
                                                    with_kwargs=True) for i in (2, 4))]
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in hooks:
        h.remove()
    x = got["x"].double().reshape(-1, got["x"].shape[-1])
    r = got[2].double().reshape(x.shape) - x
    y = got[4].double().reshape(x.shape) - r
    t = result.maps["2-3"]
    assert t.shape == (x.shape[1],)
    torch.testing.assert_close(t, (x * y).sum(0) / (x * x).sum(0), rtol=1e-6, atol=0)  # float64 sums, batch by batch there
    [report] = result.gaps
    assert report["map"] == "diagonal" and report["folded_into"] == "post_feedforward_layernorm"
    assert report["residual_after"] < report["residual_before"]
    healed = AutoModelForCausalLM.from_pretrained(tmp_path / "healed", dtype=torch.float32).eval()
    h = decoder_layers(healed)[2][2].register_forward_pre_hook(lambda m, a, k: got.__setitem__("in", a[0] if a else k["hidden_states"]),
                                                                 with_kwargs=True)
    with torch.no_grad():
        healed(input_ids=ids, use_cache=False)
    h.remove()
    expected = (r + x * t).reshape(got["in"].shape)
    torch.testing.assert_close(got["in"].double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert (got[2].double() - expected).abs().max() > 1e-3 * expected.abs().max()  # the map changed the state: the test can fail


def test_refusals_are_one_line(ref_of, tmp_path, capsys):
    ref = ref_of("llama")
    start = make_cut(ref, tmp_path / "start", "2-5")
    _refused(capsys, ["heal", str(start), str(tmp_path / "o1"), "--data", str(CORPUS)], "drops layer 0-1")
    middle = make_cut(ref, tmp_path / "middle", "0-1,4-5")
    _refused(capsys, ["heal", str(middle), str(tmp_path / "o2"), "--data", str(CORPUS), "--method", "layer", "--loss", "kl"],
             "is not the tail")
    _refused(capsys, ["heal", str(ref), str(tmp_path / "o3"), "--data", str(CORPUS)], "not a cut written by `downcycle cut`")
    _refused(capsys, ["heal", str(middle), str(middle / "inside"), "--data", str(CORPUS)], "must not be the model")
    _refused(capsys, ["heal", str(middle), str(tmp_path), "--data", str(CORPUS), "--force"], "must not be the")
    _refused(capsys, ["heal", str(middle), str(tmp_path / "o4")], "needs --data")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_cut_with_heal_writes_the_healed_cut_in_one_command(ref_of, tmp_path):
    from safetensors.torch import load_file

    ref = ref_of("llama")
    code = cli.main(["cut", str(ref), str(tmp_path / "one"), "--layers", "0-3", "--heal", "linear", "--data", str(CORPUS),
                     "--heal-samples", str(SAMPLES), "--heal-seq-len", str(SEQ)])
    assert code == 0
    heal(make_cut(ref, tmp_path / "cut", "0-3"), tmp_path / "two", ridge=1e-4)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "one" / "downcycle.json").read_text())["stage"] == "heal"
