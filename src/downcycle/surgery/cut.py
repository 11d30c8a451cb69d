"""``downcycle cut``: write a checkpoint made of a selection of a model's decoder layers.

Reads only safetensors headers, plans the new config and tensor layout (:mod:`.depth`),
then copies byte ranges into a temporary sibling directory that is renamed into place at the end.
Memory use is independent of the model's size, and torch is never imported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..architecture import LayerLayout, infer_layout
from ..artifacts.atomic import atomic_output_dir, check_free_space, check_new_output, check_output_apart
from ..artifacts.quantities import BYTES, parse_quantity
from ..checkpoint import open_checkpoint, plan_shards, start_shards
from ..checkpoint.safetensors_index import INDEX_NAME
from ..checkpoint.writer import usable_cores
from ..errors import DowncycleError
from ..loading import read_config, resolve_source
from ..recipe import CutConfig, inputs_of, output_dict, to_dict
from .depth import cut_config, describe, tensor_plan
from .layerspec import contiguous_runs, drop_to_keep, format_layers, parse_layers
from .plan import load_plan

MERGEKIT_NAME = "mergekit.yaml"
_PROGRESS_MIN_BYTES = 256 * 1024 * 1024

__all__ = ["cut", "check_paths", "copy_threads", "CutResult", "select_layers", "source_inputs", "summary"]


@dataclass
class CutResult:
    out: Path
    kept_layers: list[int]
    source_layers: int
    bytes_written: int
    shards: list[str]
    notes: list[str]


def select_layers(config: CutConfig, num_layers: int) -> list[int]:
    """The kept source layers named by ``--layers``, ``--drop`` or ``--plan``."""
    if config.layers is not None:
        return parse_layers(config.layers, num_layers)
    if config.drop is not None:
        return drop_to_keep(config.drop, num_layers)
    if config.plan is None:  # --keep: an analysis chooses them (downcycle.compound.cut), and passes them in
        raise DowncycleError("--keep: the layers are chosen by an analysis first (`downcycle cut`, or downcycle.compound.cut)")
    plan = load_plan(config.plan)
    if plan.source_layers is not None and plan.source_layers != num_layers:
        raise DowncycleError(f"{config.plan}: plan is for a {plan.source_layers}-layer model, the source has {num_layers}")
    bad = [i for i in plan.kept_layers if not 0 <= i < num_layers]
    if bad:
        raise DowncycleError(f"{config.plan}: layer {bad[0]} is out of range for a {num_layers}-layer model")
    return plan.kept_layers


def check_paths(config: CutConfig) -> Path:
    """Refuse an output that exists (without ``--force``), or is, holds or lies inside an input (the
    source, a hub id's downloaded snapshot included), before any work; returns the source's local
    directory."""
    out = Path(config.out)
    check_new_output(out, config.force, inputs_of(config))
    src = resolve_source(config.source)
    check_output_apart(out, [("source", src)])
    return src


def cut(config: CutConfig, kept: list[int] | None = None, beside: Callable[[Path], None] | None = None) -> CutResult:
    """Cut ``config.source`` down (or up) to the selected layers and write it to ``config.out``.

    Only what the copy needs is done (and imported) before the shards start copying, in background
    threads; the small files, hashes and provenance are written meanwhile, on a core that no copy
    is using.

    Args:
        kept: the source layers to keep, when the caller chose them (``--keep``: an analysis);
            else ``--layers``, ``--drop`` or ``--plan`` name them.
        beside: called with the directory being filled, to write more files beside the weights
            before the manifest and the card (``--keep``: the analysis that chose ``kept``).
    """
    out = Path(config.out)
    src = check_paths(config)
    source_config = read_config(src)
    ckpt = open_checkpoint(src)
    layout = infer_layout(source_config, list(ckpt.tensors))
    if kept is None:
        kept = select_layers(config, layout.num_layers)
    new_config, notes = cut_config(source_config, layout, kept)
    shards = plan_shards(tensor_plan(layout, ckpt.tensors, kept), parse_quantity(config.max_shard_size, "--max-shard-size", BYTES))
    total = sum(s.nbytes for s in shards)
    check_free_space(out, total)
    metadata = {"format": "pt", **ckpt.metadata}
    threads = copy_threads(config.threads)
    with atomic_output_dir(out, force=config.force) as tmp, _progress(total, config.progress) as bar, \
            start_shards(tmp, shards, metadata, progress=bar.update if bar else None, threads=threads) as copying:
        copying.wait_for_spare_core()  # then the small files below take no CPU time from the copies
        from ..artifacts.card import write_card
        from ..artifacts.manifest import write_manifest
        from ..artifacts.sidecars import copy_sidecars

        (tmp / "config.json").write_text(json.dumps(new_config, indent=2, sort_keys=False) + "\n")
        copy_sidecars(src, tmp, rewritten={"config.json", MERGEKIT_NAME})
        if beside is not None:
            beside(tmp)
        (tmp / MERGEKIT_NAME).write_text(mergekit_yaml(config.source, kept, _dtype(source_config, ckpt.tensors, layout)))
        inputs = source_inputs(config.source, src, ckpt)
        outputs = {
            **describe(kept, layout.num_layers),
            "layers_spec": format_layers(kept),
            "model_type": layout.model_type,
            "layer_prefix": layout.prefix,
            "lm_head": "tied" if layout.tied_embeddings else "separate",
            "bytes": total,
            "shards": copying.names,
            "config_notes": notes,
        }
        write_manifest(tmp, "cut", to_dict(config), inputs, outputs, hashed=output_dict(config))
        write_card(tmp)  # README.md from the manifest just written (the source's card is never copied)
    return CutResult(out, kept, layout.num_layers, total, copying.names, notes)


def source_inputs(source: str, src: Path, ckpt: Any) -> dict[str, Any]:
    """The manifest's ``inputs`` for surgery on the checkpoint ``ckpt`` in ``src`` (named ``source``):
    where it is and the hashes that identify it (config.json, the shard index, the shard headers)."""
    from ..artifacts.hashes import file_sha256

    hashes = {"config.json": file_sha256(src / "config.json")}
    if (src / INDEX_NAME).is_file():
        hashes[INDEX_NAME] = file_sha256(src / INDEX_NAME)
    hashes["shard_headers"] = ckpt.header_sha256
    return {"source": source, "source_path": str(src.resolve()), "hashes": hashes}


def mergekit_yaml(source: str, kept: list[int], dtype: str | None) -> str:
    """The equivalent mergekit passthrough config, for users of that tool."""
    lines = ["# The same cut as a mergekit passthrough merge (mergekit-yaml mergekit.yaml OUT)", "merge_method: passthrough"]
    if dtype:
        lines.append(f"dtype: {dtype}")
    lines.append("slices:")
    for start, end in contiguous_runs(kept):
        lines += ["  - sources:", f"      - model: {json.dumps(source)}", f"        layer_range: [{start}, {end}]"]
    return "\n".join(lines) + "\n"


_ST_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def _dtype(config: dict, tensors: dict, layout: LayerLayout) -> str | None:
    declared = config.get("torch_dtype") or config.get("dtype")
    if isinstance(declared, str):
        return declared
    first = layout.layers[0][0]
    return _ST_DTYPES.get(tensors[first].dtype)


def copy_threads(requested: int = 0) -> int:
    """``--threads``, with 0 meaning one per usable CPU core (at most 8)."""
    if requested:
        return requested
    return min(usable_cores(), 8)


class _progress:
    """A tqdm bar over bytes for large cuts; None (no bar) for small ones."""

    def __init__(self, total: int, enabled: bool) -> None:
        # only on a terminal: tqdm's import is not free, and a log file gains nothing from a bar
        self.total, self.bar = total, None
        self.enabled = enabled and total >= _PROGRESS_MIN_BYTES and sys.stderr.isatty()

    def __enter__(self):
        if self.enabled:
            from ..progress import progress_bar

            # decimal units, as the summary line
            self.bar = progress_bar(total=self.total, unit="B", unit_scale=True, unit_divisor=1000, desc="cut", leave=False)
        return self.bar

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def summary(result: CutResult) -> str:
    """What ``downcycle cut`` wrote, and the notes on rewritten config fields."""
    lines = [f"wrote {result.out}: {len(result.kept_layers)} of {result.source_layers} layers, "
             f"{result.bytes_written / 1e6:.1f} MB in {len(result.shards)} shard(s)"]
    return "\n".join(lines + [f"  note: {note}" for note in result.notes])
