"""``downcycle convert FILE.gguf OUT``: a GGUF file (llama.cpp's format) to a plain Hugging Face checkpoint.

A GGUF holds the weights, most of them quantized in blocks, and the config, the tokenizer and the
chat template as metadata. All of it is read by the GGUF ecosystem's own code: the ``gguf``
package's reader checks the file and lists its tensor types, and transformers' GGUF support builds
the config, the tokenizer and the model, dequantizing with ``gguf.quants`` and undoing llama.cpp's
row permutation of the query and key projections. What is written is a dense safetensors
checkpoint with ``config.json``, ``generation_config.json``, the tokenizer files and the chat
template. Dequantizing unpacks the values the blocks encode; the precision the quantization
dropped is not recovered.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..artifacts.atomic import atomic_output_dir, check_new_output
from ..artifacts.hashes import file_sha256
from ..artifacts.manifest import write_manifest
from ..checkpoint.safetensors_index import METADATA_KEY, read_header
from ..errors import DowncycleError
from ..progress import quiet_library_bars
from ..recipe import ConvertConfig, inputs_of, to_dict

GGUF_MAGIC = b"GGUF"
PROVENANCE_NAME = "PROVENANCE.md"
_NEEDS = ("gguf", "accelerate")  # transformers' GGUF loader imports both

__all__ = ["PROVENANCE_NAME", "GgufInfo", "convert_gguf", "read_gguf_info"]


@dataclass(frozen=True)
class GgufInfo:
    """What the file's header says, for the manifest and the provenance note."""

    architecture: str
    name: str | None
    license: str | None
    file_type: int | None
    tensor_types: dict[str, int]  # GGML type name -> number of tensors stored in it
    tensors: int
    has_tokenizer: bool
    has_chat_template: bool


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _require_packages() -> None:
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise DowncycleError(f"converting a GGUF file needs {' and '.join(missing)}: pip install 'downcycle[gguf]'")


def read_gguf_info(path: Path) -> GgufInfo:
    """Read and check ``path``'s header and tensor table with ``gguf.GGUFReader``.

    Raises:
        DowncycleError: the file is missing, not a GGUF, truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise DowncycleError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        if f.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise DowncycleError(f"{path}: not a GGUF file (it does not start with the bytes 'GGUF')")
    _require_packages()
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as e:  # noqa: BLE001 -- the reader fails in many ways on a damaged file; all are the file's fault
        raise DowncycleError(f"{path}: truncated or corrupt GGUF file ({type(e).__name__}: {_first_line(e)})") from None
    size = path.stat().st_size
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise DowncycleError(f"{path}: truncated GGUF file ({size:,} bytes; its tensors end at byte {end:,})")

    def field(key: str) -> Any:
        return reader.fields[key].contents() if key in reader.fields else None

    architecture = field("general.architecture")
    if not isinstance(architecture, str):
        raise DowncycleError(f"{path}: corrupt GGUF file (no general.architecture)")
    return GgufInfo(architecture=architecture, name=field("general.name"), license=field("general.license"),
                    file_type=field("general.file_type"),
                    tensor_types=dict(sorted(Counter(t.tensor_type.name for t in reader.tensors).items())),
                    tensors=len(reader.tensors), has_tokenizer="tokenizer.ggml.model" in reader.fields,
                    has_chat_template="tokenizer.chat_template" in reader.fields)


def _load(path: Path, info: GgufInfo, dtype: str) -> tuple[Any, Any]:
    """The dense model and (if the file has one) the tokenizer, through transformers' GGUF support."""
    import torch
    import transformers
    import transformers.modeling_gguf_pytorch_utils as gguf_loader
    from transformers import AutoModelForCausalLM

    from ..loading import load_tokenizer
    from ..progress import library_bar_as_lines

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    if hasattr(transformers, "GgufConfig"):  # transformers >= 5 may keep blocks packed unless told to unpack them
        kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
    where = f"{path}: transformers {transformers.__version__} cannot load GGUF architecture {info.architecture!r}"
    try:  # the de-quantizing loop's bar ("Converting and de-quantizing GGUF tensors") is plain lines in a log
        with library_bar_as_lines(gguf_loader):
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
    except (ValueError, KeyError, NotImplementedError, TypeError) as e:
        raise DowncycleError(f"{where} ({_first_line(e)})") from None
    if getattr(model, "hf_quantizer", None) is not None:  # dense by now: drop the state that blocks save_pretrained
        model.hf_quantizer.remove_quantization_config(model)
    tokenizer = None
    if info.has_tokenizer:
        try:
            tokenizer = load_tokenizer(path.parent, gguf_file=path.name)
        except (ValueError, KeyError, NotImplementedError, TypeError) as e:
            raise DowncycleError(f"{path}: transformers cannot build the GGUF's tokenizer ({_first_line(e)})") from None
    return model, tokenizer


def _provenance(src: Path, sha: str, origin: str, info: GgufInfo, dtype: str) -> str:
    types = ", ".join(f"{name} {count}" for name, count in info.tensor_types.items())
    return "\n".join([
        "# Provenance",
        "",
        f"Converted by `downcycle convert` from the GGUF file `{src.name}`.",
        "",
        f"- Origin: {origin}",
        f"- sha256 of the GGUF file: `{sha}`",
        f"- Licence: {info.license or 'not stated in the file'} (from the file's `general.license`)",
        f"- Model: {info.name or 'unnamed'} (GGUF architecture `{info.architecture}`)",
        f"- GGUF tensors: {info.tensors} ({types})",
        f"- Written as: dense {dtype} safetensors. The quantized tensors were dequantized by the `gguf` package",
        "  through transformers' GGUF loader: these are the values the quantized blocks encode; the precision",
        "  the quantization dropped is not recovered.",
        "",
    ])


def convert_gguf(config: ConvertConfig) -> Path:
    """Dequantize the GGUF file ``config.source`` into a Hugging Face checkpoint in ``config.out``."""
    src = config.source
    dtype = config.dtype or "float32"
    info = read_gguf_info(src)
    check_new_output(config.out, config.force, inputs_of(config))  # before the slow load
    sha = file_sha256(src)
    origin = config.origin or str(src.resolve())
    quiet_library_bars()  # off a terminal: transformers' own bars (loading, writing shards) say nothing to a log
    with atomic_output_dir(config.out, force=config.force) as tmp:
        model, tokenizer = _load(src, info, dtype)
        model.save_pretrained(tmp)  # safetensors, config.json, generation_config.json; tied weights stored once
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)  # tokenizer.json, tokenizer_config.json, chat_template.jinja
        (tmp / PROVENANCE_NAME).write_text(_provenance(src, sha, origin, info, dtype))
        shards = sorted(p.name for p in tmp.glob("*.safetensors"))
        tensors = sum(len(read_header(tmp / shard)[0].keys() - {METADATA_KEY}) for shard in shards)
        write_manifest(tmp, "convert", to_dict(config),
                       {"source_path": str(src.resolve()), "hashes": {src.name: sha}, "origin": origin, "gguf": asdict(info)},
                       {"shards": shards, "dtype": dtype, "tensors": tensors,
                        "tie_word_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
                        "tokenizer": tokenizer is not None,
                        "chat_template": bool(tokenizer is not None and getattr(tokenizer, "chat_template", None))})
    return config.out
