"""`downcycle generate`: token-for-token agreement with transformers' generate (greedy and seeded
sampling), the sampling settings' meaning (greedy and near-greedy settings equal an argmax loop; a
checkpoint's generation config does not change them), streaming that never splits a character, the
chat template (one-line errors: test_generate_errors.py)."""

from __future__ import annotations

import io
import shutil

import pytest

torch = pytest.importorskip("torch")

from downcycle.cli import main
from downcycle.errors import DowncycleError
from downcycle.generation import SamplingParams, TextStream, generate_tokens, run_generate, text_streamer
from downcycle.recipe import GenerateConfig

MULTIBYTE = "héllo 世界 🙂 naïve"
TEMPLATE = ("{% for m in messages %}<|bos|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.fixture(scope="module")
def tokenizer(real_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(real_model))


@pytest.fixture(scope="module")
def model(real_model):
    from downcycle.loading import load_model

    return load_model(real_model)


def hf_generate(model, prompt_ids, max_new_tokens, **kw):
    """transformers' own continuation of ``prompt_ids`` (EOS included when it stopped there)."""
    ids = torch.tensor([prompt_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, pad_token_id=0, **kw)
    return out[0, len(prompt_ids):].tolist()


def ours(model, prompt_ids, max_new_tokens, params, eos=frozenset({2})):
    return list(generate_tokens(model, prompt_ids, params, max_new_tokens, eos))


def argmax_loop(model, prompt_ids, max_new_tokens):
    """Greedy decoding written out: the whole sequence through the model at every step, no cache."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


# -- the sampling settings' meaning ---------------------------------------------------------------

@pytest.mark.parametrize("params", [SamplingParams(0.7, 0, 1.0, 1.0), SamplingParams(1.0, 5, 1.0, 1.0),
                                    SamplingParams(1.3, 0, 0.6, 1.0), SamplingParams(0.5, 20, 0.9, 1.5),
                                    SamplingParams(2.0, 3, 0.05, 0.7)])
def test_settings_sample_as_transformers_processors_define_them_whatever_the_checkpoint_says(tiny_model, params):
    # Re-based: the hand-written warpers this compared with transformers' processors are gone (generate
    # applies those processors itself). What remains ours is the meaning of each setting (top_k 0 = off,
    # where generate defaults to 50), which a checkpoint's generation config must not change.
    from downcycle.loading import load_model

    m = load_model(tiny_model("llama"))
    m.generation_config.eos_token_id = None
    prompt = [1, 17, 99, 5, 64, 23, 8]
    torch.manual_seed(11)
    expected = hf_generate(m, prompt, 16, do_sample=True, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                           repetition_penalty=params.repetition_penalty)
    m.generation_config.update(top_k=7, min_p=0.2, typical_p=0.5, no_repeat_ngram_size=2, temperature=0.1, do_sample=False)
    torch.manual_seed(11)
    assert ours(m, prompt, 16, params, eos=frozenset()) == expected


def test_greedy_and_near_greedy_settings_pick_the_argmax(tiny_model):
    # Re-based from choose_token on random logits to whole generations against an argmax loop.
    from downcycle.loading import load_model

    m = load_model(tiny_model("llama"))
    prompt = [1, 17, 99, 5, 64, 23, 8]
    expected = argmax_loop(m, prompt, 12)
    assert ours(m, prompt, 12, SamplingParams(temperature=0), eos=frozenset()) == expected
    torch.manual_seed(3)
    assert ours(m, prompt, 12, SamplingParams(temperature=5.0, top_p=1e-6), eos=frozenset()) == expected
    assert ours(m, prompt, 12, SamplingParams(temperature=5.0, top_k=1), eos=frozenset()) == expected


# -- the decoding loop, against model.generate ------------------------------------------------------

@pytest.mark.parametrize("family", ["llama", "gpt2", "mistral"])
def test_greedy_equals_transformers_generate(tiny_model, family):
    from downcycle.loading import load_model

    m = load_model(tiny_model(family))
    m.generation_config.eos_token_id = None  # run all 24 steps (mistral: far past its 5-token sliding window)
    prompt = [1, 17, 99, 5, 64, 23, 8]
    expected = hf_generate(m, prompt, 24, do_sample=False)
    assert ours(m, prompt, 24, SamplingParams(temperature=0), eos=frozenset()) == expected and len(expected) == 24
    penalized = hf_generate(m, prompt, 24, do_sample=False, repetition_penalty=1.8)
    assert ours(m, prompt, 24, SamplingParams(temperature=0, repetition_penalty=1.8), eos=frozenset()) == penalized
    assert penalized != expected  # the penalty changed something, so the comparison above means something


@pytest.mark.parametrize("kw", [{"temperature": 0.9, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0},
                                {"temperature": 1.5, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.3},
                                {"temperature": 0.6, "top_k": 0, "top_p": 0.5, "repetition_penalty": 0.8}])
def test_seeded_sampling_equals_transformers_generate(model, kw):
    prompt = [1, 412, 77, 3000, 15]
    torch.manual_seed(1234)
    expected = hf_generate(model, prompt, 32, do_sample=True, **kw)
    torch.manual_seed(1234)
    got = ours(model, prompt, 32, SamplingParams(**kw))
    assert got == expected
    torch.manual_seed(1234)
    greedy = hf_generate(model, prompt, 32, do_sample=False)
    assert got != greedy  # it really sampled


def test_sampling_reproducible_per_seed_and_different_across_seeds(model):
    prompt, params = [1, 412, 77], SamplingParams(temperature=1.0)
    runs = {}
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.setdefault(seed, []).append(ours(model, prompt, 24, params))
    assert runs[0][0] == runs[0][1]
    assert runs[0][0] != runs[1][0]


def test_stops_at_eos_and_yields_it(model):
    prompt = [1, 412, 77, 3000, 15]
    greedy = ours(model, prompt, 6, SamplingParams(temperature=0), eos=frozenset())
    assert len(greedy) == 6
    stopped = ours(model, prompt, 6, SamplingParams(temperature=0), eos=frozenset({greedy[2]}))
    assert stopped == greedy[:greedy.index(greedy[2]) + 1]


# -- streaming text -------------------------------------------------------------------------------

class _Decoder:
    """The streamer TextStream decodes with, fed one token at a time: each push returns the text
    that token released (the prompt, skipped by the streamer, is one dummy token first)."""

    def __init__(self, tokenizer):
        self.streamer = text_streamer(tokenizer)
        self.streamer.put(torch.tensor([[0]]))

    def _drain(self):
        pieces = []
        while not self.streamer.text_queue.empty():
            piece = self.streamer.text_queue.get()
            if piece is not None:
                pieces.append(piece)
        return "".join(pieces)

    def push(self, token):
        self.streamer.put(torch.tensor([token]))
        return self._drain()

    def flush(self):
        self.streamer.end()
        return self._drain()


def test_incremental_decoder_never_splits_a_character(tokenizer):
    ids = tokenizer(MULTIBYTE, add_special_tokens=False)["input_ids"]
    decoder = _Decoder(tokenizer)
    pieces = [decoder.push(t) for t in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == MULTIBYTE
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces[:-1]  # some token carried only part of a character, and was held back
    assert any(tokenizer.decode(ids[:k]).endswith("\ufffd") for k in range(1, len(ids)))


def test_incremental_decoder_flushes_a_real_replacement_character(tokenizer):
    ids = tokenizer("a🙂", add_special_tokens=False)["input_ids"][:-1]  # the emoji's last byte never comes
    decoder = _Decoder(tokenizer)
    pieces = [decoder.push(t) for t in ids] + [decoder.flush()]
    assert "".join(pieces) == tokenizer.decode(ids) and pieces[-1].endswith("\ufffd")


class _Scripted:
    """Makes a real model's greedy choice follow a script: its LM head's output is replaced by a
    one-hot on the next scripted token (the forward pass and KV cache stay the model's own)."""

    def __init__(self, model, script):
        self.script, self.step = list(script), 0
        self.handle = model.lm_head.register_forward_hook(self.hook)

    def hook(self, module, args, out):
        forced = torch.full_like(out, -1e4)
        forced[..., -1, self.script[min(self.step, len(self.script) - 1)]] = 1e4
        self.step += 1
        return forced


def test_text_stream_pieces_join_to_the_decoded_multibyte_text(model, tokenizer):
    script = tokenizer(MULTIBYTE, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    scripted = _Scripted(model, script)
    try:
        stream = TextStream(model, tokenizer, [1, 55, 66], SamplingParams(temperature=0), 64, {tokenizer.eos_token_id})
        pieces = list(stream)
    finally:
        scripted.handle.remove()
    assert stream.tokens == script and stream.stop == "eos"
    assert "".join(pieces) == stream.text == MULTIBYTE
    assert not any("\ufffd" in p for p in pieces) and len(pieces) > 3  # streamed, not one final piece


def test_text_stream_on_sampled_text_joins_to_decode(model, tokenizer):
    torch.manual_seed(7)
    stream = TextStream(model, tokenizer, [1, 55, 66], SamplingParams(temperature=1.2), 40, {2})
    pieces = list(stream)
    assert "".join(pieces) == tokenizer.decode(stream.tokens, skip_special_tokens=True)
    assert len(stream.tokens) == 40 or stream.stop == "eos"


# -- the command: prompt building, chat template, errors, CLI -------------------------------------

@pytest.fixture(scope="module")
def chat_model(real_model, tmp_path_factory):
    """real_model's weights with a tokenizer that has a chat template."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(real_model, path)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.chat_template = TEMPLATE
    tok.save_pretrained(str(path))
    return path


def test_run_generate_greedy_matches_generate_and_writes_pieces(real_model, model, tokenizer):
    written = []
    result = run_generate(GenerateConfig(model=str(real_model), prompt="In the beginning", temperature=0, max_new_tokens=12,
                                         device="cpu"), write=written.append)
    assert result.prompt_ids == tokenizer("In the beginning")["input_ids"] and not result.chat
    assert result.tokens == hf_generate(model, result.prompt_ids, 12, do_sample=False)
    assert "".join(written) == result.text == tokenizer.decode(result.tokens, skip_special_tokens=True)


def test_chat_template_is_applied(chat_model, model, tokenizer):
    cfg = {"model": str(chat_model), "prompt": "Who begat Enos?", "temperature": 0, "max_new_tokens": 5, "device": "cpu"}
    result = run_generate(GenerateConfig(**cfg, system="Answer briefly."), write=lambda s: None)
    expected = "<|bos|>system: Answer briefly.\n<|bos|>user: Who begat Enos?\nassistant:"
    assert result.chat and result.prompt_ids == tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert result.prompt_ids.count(tokenizer.bos_token_id) == 2  # the template's BOS only, none added on top
    assert result.tokens == hf_generate(model, result.prompt_ids, 5, do_sample=False)
    off = run_generate(GenerateConfig(**{**cfg, "chat": "off"}), write=lambda s: None)
    assert not off.chat and off.prompt_ids == tokenizer("Who begat Enos?")["input_ids"]


def test_cli_prints_the_continuation(real_model, model, tokenizer, tmp_path, monkeypatch, capsys):
    prompt = "And God said"
    expected_ids = hf_generate(model, tokenizer(prompt)["input_ids"], 10, do_sample=False)
    expected = tokenizer.decode(expected_ids, skip_special_tokens=True) + "\n"
    assert main(["generate", str(real_model), prompt, "--temperature", "0", "--max-new-tokens", "10", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert out.out == expected and "10 new, stop: length" in out.err
    (tmp_path / "prompt.txt").write_text(prompt, encoding="utf-8")
    assert main(["generate", str(real_model), "--prompt-file", str(tmp_path / "prompt.txt"), "--temperature", "0",
                 "--max-new-tokens", "10", "--no-stream"]) == 0
    assert capsys.readouterr().out == expected
    monkeypatch.setattr("sys.stdin", io.StringIO(prompt))
    assert main(["generate", str(real_model), "-", "--temperature", "0", "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out == expected


def test_max_new_tokens_fits_the_model_length(real_model, tokenizer):
    # real_model handles 128 positions (downcycle.tiny); a 120-token prompt leaves room for 8 new tokens.
    prompt = " ".join(["light"] * 200)
    ids = tokenizer(prompt)["input_ids"]
    cut = tokenizer.decode(ids[1:120])
    assert len(tokenizer(cut)["input_ids"]) == 120
    result = run_generate(GenerateConfig(model=str(real_model), prompt=cut, temperature=0, max_new_tokens=50, device="cpu"),
                          write=lambda s: None)
    assert len(result.tokens) <= 8 and "max_new_tokens cut to 8" in result.notes[0]
    with pytest.raises(DowncycleError, match="at most 128 positions"):
        run_generate(GenerateConfig(model=str(real_model), prompt=prompt, device="cpu"), write=lambda s: None)
