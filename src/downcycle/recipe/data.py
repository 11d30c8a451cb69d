"""Config of `downcycle data`: token-budgeted packed corpora."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts.quantities import COUNT, parse_quantity
from ..errors import DowncycleError
from .fields import INPUT, OUTPUT, arg, device_arg

__all__ = ["DataConfig", "GenerationOptions"]


@dataclass(frozen=True)
class GenerationOptions:
    """How a ``gen:`` source samples (``downcycle data --gen-*``)."""

    new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    prompts: str | None = None  # a text source; None: BOS-only prompts
    prompt_tokens: int = 8
    batch: int = 16
    docs: int | None = None  # stop after this many documents (None: endless)
    seed: int = 0
    device: str = "auto"  # resolved by loading.resolve_device


@dataclass
class DataConfig:
    """Build a token-budgeted corpus of packed fixed-length sequences with a model's tokenizer."""

    tokenizer: str = arg("model or tokenizer directory (or hub id, when online) whose fast tokenizer is used", metavar="MODEL",
                         role=INPUT, hub=True)
    source: list[str] = arg("text source, repeatable: .txt/.jsonl/.json/.parquet (also .gz/.zst), a save_to_disk directory, "
                            "a glob, an HF dataset as hf:ORG/NAME[/CONFIG][@SPLIT], or gen:MODEL_DIR (text sampled from that model, "
                            "see --gen-*)", metavar="SRC", default_factory=list, role=INPUT)
    out: Path = arg("output corpus directory (must not exist unless --force)", metavar="DIR", affects_output=False, role=OUTPUT, pipeline=True)
    tokens: str | None = arg("token budget, train + validation, e.g. 1B, 500M (default: every token of the sources)", metavar="N")
    weights: str | None = arg("mixture weights of the sources by tokens, comma-separated, e.g. 0.7,0.3", metavar="W")
    seq_len: int = arg("tokens per packed sequence", 2048)
    val: float = arg("fraction of the tokens held out for validation, by whole documents", 0.001)
    text_field: str = arg("field holding the text in .jsonl/.json/.parquet/arrow/HF records", "text")
    txt_docs: str = arg("documents of a .txt file: 'file' (one per file) or 'blank-line' (one per blank-line-separated block)", "file")
    filter: str | None = arg("keep records whose fields equal these values, e.g. language=en,year=2024", metavar="K=V")
    dedup: bool = arg("drop exact duplicate documents (hash of the text; about 100 bytes of memory per document)", False)
    seed: int = arg("seed of the document shuffle and the validation split", 0)
    shuffle_tokens: str = arg("tokens held in the bounded document-shuffle buffer (0 keeps source order)", "16M")
    shard_size: str = arg("approximate bytes per shard file, e.g. 256MB", "256MB")
    boundaries: bool = arg("record where each document starts (per-shard .docs.npy) for document-wise attention", True)
    batch_docs: int = arg("documents per tokenizer batch", 1024)
    resume: bool = arg("resume an interrupted build of the same config from its last finished shard", True, affects_output=False, pipeline=True)
    force: bool = arg("replace DIR if it exists", False, affects_output=False, pipeline=True)
    progress: bool = arg("show a progress bar with tokens/s", True, affects_output=False, pipeline=True)
    trust_remote_code: bool = arg("allow the tokenizer's custom code to run", False)
    # gen:MODEL_DIR sources (sequence-level distillation data: text the model writes itself)
    gen_tokens: int = arg("gen: new tokens per generated document at most (it ends early at EOS)", 256)
    gen_temperature: float = arg("gen: sampling temperature (0: greedy)", 1.0)
    gen_top_p: float = arg("gen: nucleus sampling mass in (0, 1] (1: off)", 1.0)
    gen_prompts: str | None = arg("gen: prompt each document with BOS and the first --gen-prompt-tokens tokens of a document of this "
                                  "source (cycled); default: BOS alone", metavar="SRC", role=INPUT)
    gen_prompt_tokens: int = arg("gen: tokens of each --gen-prompts document in a prompt", 8)
    gen_batch: int = arg("gen: documents sampled together (one forward pass per token for the batch)", 16)
    gen_docs: int | None = arg("gen: documents to generate at most (default: until --tokens is met)", metavar="N")
    gen_device: str = device_arg("gen: device of the generating model")

    def __post_init__(self) -> None:
        if self.tokenizer is None:
            raise DowncycleError("data needs --tokenizer (a model or tokenizer directory)")
        if not self.source:
            raise DowncycleError("data needs at least one --source")
        if isinstance(self.source, str):
            self.source = [self.source]
        if self.out is None:
            raise DowncycleError("data needs --out DIR")
        self.out = Path(self.out)
        if self.tokens is not None and str(self.tokens).lower() != "all":
            parse_quantity(self.tokens, "--tokens", COUNT)
        if self.seq_len < 2:
            raise DowncycleError(f"--seq-len: {self.seq_len} must be at least 2")
        if not 0 <= self.val < 1:
            raise DowncycleError(f"--val: {self.val} must be a fraction in [0, 1)")
        if self.txt_docs not in ("file", "blank-line"):
            raise DowncycleError(f"--txt-docs: {self.txt_docs!r} must be 'file' or 'blank-line'")
        if self.weights is not None:
            self.weight_list()  # validate now, fail before any work
        if self.batch_docs < 1:
            raise DowncycleError(f"--batch-docs: {self.batch_docs} must be at least 1")
        for name in ("gen_tokens", "gen_prompt_tokens", "gen_batch", "gen_docs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise DowncycleError(f"--{name.replace('_', '-')}: {getattr(self, name)} must be at least 1")
        if not self.gen_temperature >= 0 or not 0 < self.gen_top_p <= 1:
            raise DowncycleError(f"--gen-temperature {self.gen_temperature} must be >= 0 and --gen-top-p {self.gen_top_p} in (0, 1]")
        endless = [s for s in self.source if str(s).startswith("gen:")]
        if endless and self.token_budget() is None and self.gen_docs is None:
            raise DowncycleError(f"--source {endless[0]}: a gen: source never ends by itself; give --tokens or --gen-docs")

    def token_budget(self) -> int | None:
        """The total token budget, or None for every token of the sources."""
        return None if self.tokens is None or str(self.tokens).lower() == "all" else parse_quantity(self.tokens, "--tokens", COUNT)

    def weight_list(self) -> list[float]:
        """One weight per source (equal when --weights is not given), normalised to sum to 1."""
        if self.weights is None:
            return [1.0 / len(self.source)] * len(self.source)
        try:
            w = [float(x) for x in str(self.weights).split(",")]
        except ValueError:
            raise DowncycleError(f"--weights: {self.weights!r} is not a comma-separated list of numbers") from None
        if len(w) != len(self.source):
            raise DowncycleError(f"--weights: {len(w)} weights for {len(self.source)} sources")
        if any(x <= 0 for x in w):
            raise DowncycleError(f"--weights: {self.weights!r} must all be positive")
        return [x / sum(w) for x in w]

    def filters(self) -> dict[str, str]:
        if not self.filter:
            return {}
        out = {}
        for item in self.filter.split(","):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise DowncycleError(f"--filter: {item!r} is not KEY=VALUE")
            out[key.strip()] = value.strip()
        return out

    def generation(self) -> GenerationOptions:
        """The sampling options of this corpus's ``gen:`` sources."""
        return GenerationOptions(self.gen_tokens, self.gen_temperature, self.gen_top_p, self.gen_prompts, self.gen_prompt_tokens,
                                 self.gen_batch, self.gen_docs, self.seed, self.gen_device)
