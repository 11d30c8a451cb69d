"""Fixtures shared by the test folders: tiny real Hugging Face models built locally (no network), the
shipped corpus and tokenizer, the evaluation tests' models and tokenizers (also used by training and
integration), a corpus's shard bytes, a command's stderr as a log and as a terminal see it, and the
in-memory oracle of width pruning (the surgery and architecture tests'). Fixtures of one folder live in
that folder's conftest.py."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EVAL_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"  # committed task items


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls are far faster on one thread than with OpenMP sync on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(family, **overrides)`` -> path of a saved tiny model, built once per session."""
    from downcycle.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny")
    cache: dict[str, Path] = {}

    def make(family: str, **overrides) -> Path:
        key = family + repr(sorted(overrides.items()))
        if key not in cache:
            cache[key] = build_tiny(family, root / f"{family}-{len(cache)}", **overrides)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def decoder_layers():
    """``decoder_layers(model)`` -> the ModuleList of decoder layers of a loaded model, its parent and attribute name."""
    import torch

    def find(model):
        n = model.config.get_text_config().num_hidden_layers
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == n and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks"):
                parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
                return parent, name.rsplit(".", 1)[-1], module
        raise AssertionError("no decoder layer list found")

    return find


# The width oracle: family -> (MLP output projection, attention output projection, embedding modules), a
# decoder layer's and the model's. The tests' own knowledge of each family, written from transformers'
# modeling code: independent of the width table downcycle infers.
_LLAMA_NAMES = ("mlp.down_proj", "self_attn.o_proj", ("model.embed_tokens",))
WIDTH_ORACLE = {
    "gpt2": ("mlp.c_proj", "attn.c_proj", ("transformer.wte", "transformer.wpe")),
    "gpt_neox": ("mlp.dense_4h_to_h", "attention.dense", ("gpt_neox.embed_in",)),
    "nanochat": ("mlp.fc2", "self_attn.o_proj", ("model.embed_tokens",)),
    "biogpt": ("fc2", "self_attn.out_proj", ("biogpt.embed_tokens", "biogpt.embed_positions")),
    "gpt_neo": ("mlp.c_proj", "attn.attention.out_proj", ("transformer.wte", "transformer.wpe")),
    "starcoder2": ("mlp.c_proj", "self_attn.o_proj", ("model.embed_tokens",)),
    "phi": ("mlp.fc2", "self_attn.dense", ("model.embed_tokens",)),
    "persimmon": ("mlp.dense_4h_to_h", "self_attn.dense", ("model.embed_tokens",)),
    "gptj": ("mlp.fc_out", "attn.out_proj", ("transformer.wte",)),
    "codegen": ("mlp.fc_out", "attn.out_proj", ("transformer.wte",)),
    "gpt_bigcode": ("mlp.c_proj", "attn.c_proj", ("transformer.wte", "transformer.wpe")),
    "falcon": ("mlp.dense_4h_to_h", "self_attention.dense", ("transformer.word_embeddings",)),
    "opt": ("fc2", "self_attn.out_proj", ("model.decoder.embed_tokens", "model.decoder.embed_positions")),
    "xglm": ("fc2", "self_attn.out_proj", ("model.embed_tokens",)),
}  # every other family names them as Llama does
QK_OVER_ALL_HEADS = {"olmo2", "olmo3"}  # q/k RMSNorms over the whole projection: the pruned heads' queries and keys are zero too
TINY_FFN, TINY_HEADS, TINY_KV, TINY_HIDDEN, TINY_HEAD_DIM = 64, 4, 2, 32, 8  # downcycle.tiny's sizes


@pytest.fixture(scope="session")
def width_oracle(decoder_layers):
    """The in-memory oracle of width pruning, as a namespace: ``names(family)`` (the modules above),
    ``complement(kept, n)``, ``head_columns(heads)``, ``QK_OVER_ALL_HEADS``, and
    ``with masked(model, family, ffn=None, heads=None, kv_heads=None, hidden=None, kv=2, layer_map=None)``:
    ``model`` computing with everything the plan fields do *not* keep set to zero by forward hooks on
    transformers' own modules: the inputs of the MLP output projection (neurons), the heads' slices of
    the attention output projection's input, the pruned heads' queries and the pruned groups' keys
    where q/k norms span all heads, and (``hidden``) the embedding channels everywhere they enter the
    residual stream (the embeddings' outputs, every layer's two output projections). ``layer_map[j]``:
    the source layer whose plan rows the model's layer ``j`` uses (default: the identity)."""
    from types import SimpleNamespace

    def names(family: str) -> tuple[str, str, tuple[str, ...]]:
        return WIDTH_ORACLE.get(family, _LLAMA_NAMES)

    def complement(kept: list[int], n: int) -> list[int]:
        return [i for i in range(n) if i not in set(kept)]

    def head_columns(heads: list[int], head_dim: int = TINY_HEAD_DIM) -> list[int]:
        return [h * head_dim + j for h in heads for j in range(head_dim)]

    def zero(t, index):
        t = t.clone()
        t[..., index] = 0
        return t

    def pre(index):
        return lambda mod, args: (zero(args[0], index), *args[1:])

    def post(index):
        return lambda mod, args, out: zero(out, index)

    @contextmanager
    def masked(model, family: str, ffn=None, heads=None, kv_heads=None, hidden=None, kv: int = TINY_KV, layer_map=None):
        down, o, embeddings = names(family)
        hooks = []
        try:
            for j, layer in enumerate(decoder_layers(model)[2]):
                i = j if layer_map is None else layer_map[j]
                if ffn is not None:
                    hooks.append(layer.get_submodule(down).register_forward_pre_hook(pre(complement(ffn[i], TINY_FFN))))
                if heads is not None:
                    dead = head_columns(complement(heads[i], TINY_HEADS))
                    hooks.append(layer.get_submodule(o).register_forward_pre_hook(pre(dead)))
                    if family in QK_OVER_ALL_HEADS:
                        hooks.append(layer.get_submodule("self_attn.q_proj").register_forward_hook(post(dead)))
                if kv_heads is not None and family in QK_OVER_ALL_HEADS:
                    dead = head_columns(complement(kv_heads[i], kv))
                    hooks.append(layer.get_submodule("self_attn.k_proj").register_forward_hook(post(dead)))
                if hidden is not None:
                    for name in (down, o):
                        hooks.append(layer.get_submodule(name).register_forward_hook(post(complement(hidden, TINY_HIDDEN))))
            if hidden is not None:
                for name in embeddings:
                    hooks.append(model.get_submodule(name).register_forward_hook(post(complement(hidden, TINY_HIDDEN))))
            yield model
        finally:
            for h in hooks:
                h.remove()

    return SimpleNamespace(names=names, complement=complement, head_columns=head_columns, masked=masked,
                           QK_OVER_ALL_HEADS=QK_OVER_ALL_HEADS)


@pytest.fixture(scope="session")
def real_corpus(tmp_path_factory):
    """A small real corpus (King James Bible from examples/corpus, tokenized by examples/tokenizer):
    64-token packed sequences, 10% held out, built once per session by `downcycle data`'s library entry."""
    from downcycle.corpus.build import build_corpus
    from downcycle.recipe import DataConfig

    out = tmp_path_factory.mktemp("corpus") / "kjv"
    return build_corpus(DataConfig(tokenizer=str(EXAMPLES / "tokenizer"), source=[str(EXAMPLES / "corpus" / "kjv.jsonl.gz")],
                                   out=out, tokens="120K", seq_len=64, val=0.1, progress=False))


@pytest.fixture(scope="session")
def real_model(tiny_model):
    """A tiny Llama with examples/tokenizer's 8192-token vocabulary and its tokenizer files beside it."""
    import shutil

    path = tiny_model("llama", vocab_size=8192)
    for f in (EXAMPLES / "tokenizer").iterdir():
        shutil.copy2(f, path / f.name)
    return path


@pytest.fixture(scope="session")
def train_tokenizer():
    """``train_tokenizer(directory, vocab_size=2000, bos=True)``: train a byte-level BPE tokenizer on the
    committed task items and save it (as a transformers fast tokenizer) into ``directory``.

    With ``bos`` the tokenizer prepends ``<s>`` to every encoding (like Llama's), otherwise it adds
    nothing (like GPT-2's); ``<s>``/``</s>``/``<pad>`` are ids 1/2/0 either way.
    """
    import json

    def texts() -> list[str]:
        out = []
        for path in sorted(EVAL_FIXTURES.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                out.append(" ".join(str(v) for v in json.loads(line).values()))
        return out

    def train(directory: Path, vocab_size: int = 2000, bos: bool = True):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts(), trainer)
        if bos:
            tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
        fast.save_pretrained(directory)
        return fast

    return train


@pytest.fixture(scope="session")
def build_eval_model(train_tokenizer):
    """``build_eval_model(directory, family="llama", bos=True, seed=0, **overrides)`` -> ``directory``: a
    tiny ``family`` model plus a tokenizer (2 layers, 2048 positions): the shipped examples/tokenizer
    when present (and ``bos``), else one trained on the committed task items."""
    from downcycle.tiny import build_tiny

    shipped = EXAMPLES / "tokenizer"

    def build(directory: Path, family: str = "llama", bos: bool = True, seed: int = 0, **overrides) -> Path:
        directory = Path(directory)
        kwargs = {"num_hidden_layers": 2, "max_position_embeddings": 2048, "bos_token_id": 1, "eos_token_id": 2,
                  "pad_token_id": 0, "initializer_range": 0.05}
        kwargs.update(overrides)
        if bos and (shipped / "tokenizer.json").is_file():  # the project's real BPE tokenizer (adds BOS)
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(shipped)
            kwargs.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        else:
            tok = train_tokenizer(directory, bos=bos)
        build_tiny(family, directory, seed=seed, vocab_size=len(tok), **kwargs)
        tok.save_pretrained(directory)
        return directory

    return build


@pytest.fixture(scope="session")
def corpus_bytes():
    """``corpus_bytes(corpus)`` -> every shard and boundary file's bytes of a corpus directory, by name."""

    def read(corpus: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(Path(corpus).iterdir()) if p.suffix in (".bin", ".npy")}

    return read


@pytest.fixture(scope="session")
def stderr_of():
    """``stderr_of(args, terminal)`` -> ``(exit status, stderr)`` of ``python ARGS``, its stderr a pipe
    (as a log sees it) or (``terminal``) a pseudo-terminal (as a person sees it), with the libraries'
    progress bars at their defaults (this conftest turns huggingface_hub's off for the tests)."""
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios

    switches = ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")  # they would turn the bars off whatever downcycle does

    def run(args: list[str], terminal: bool) -> tuple[int, str]:
        env = {k: v for k, v in os.environ.items() if k not in switches}
        env.update(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
                   OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
        cmd = [sys.executable, *args]
        if not terminal:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False)
            return done.returncode, done.stderr.decode(errors="replace")  # bytes: text mode would turn each \r into \n
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower, env=env)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(leader)
        return proc.wait(), b"".join(chunks).decode(errors="replace")

    return run
