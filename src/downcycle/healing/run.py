"""``downcycle heal CUT OUT --method linear|layer --data DATA`` (and ``cut ... --heal``): heal the gaps
of a depth cut from one calibration pass through the uncut reference; write a plain checkpoint.

``linear`` writes the cut's own layer list with each gap's map folded into the down projection of the
kept layer before it. ``layer`` writes the cut plus one layer per gap (at the place of the gap layer
it was initialised from), so a model with the size of a K-layer cut comes from a (K−1)-layer cut.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..architecture import infer_layout
from ..artifacts.atomic import atomic_output_dir, check_new_output
from ..checkpoint.safetensors_index import open_checkpoint
from ..errors import DowncycleError
from ..loading import read_config, resolve_source
from ..recipe import HealConfig, inputs_of, output_dict, to_dict
from .gaps import find_gaps
from .reference import Reference

__all__ = ["HealResult", "heal_layers", "run_heal", "summary"]


@dataclass
class HealResult:
    out: Path
    method: str
    layers: list[int]
    source_layers: int
    gaps: list[dict[str, Any]]
    seconds: float
    maps: dict[str, Any] = field(default_factory=dict, repr=False)  # linear: gap name -> T (float64), for callers and tests


def run_heal(config: HealConfig, echo: Any = None) -> HealResult:
    """Heal the cut in ``config.model``: its kept layers and its reference are read from its manifest."""
    from ..artifacts.hashes import file_sha256
    from ..artifacts.manifest import read_manifest

    check_new_output(Path(config.out), config.force, inputs_of(config))
    cut_dir = resolve_source(config.model)
    man = read_manifest(cut_dir)
    if not man or man.get("stage") != "cut" or "kept_layers" not in man.get("outputs", {}):
        raise DowncycleError(f"{config.model}: not a cut written by `downcycle cut` (its downcycle.json must record the kept "
                             "layers); heal while cutting with `downcycle cut ... --heal METHOD --data DATA`")
    reference = config.reference or man.get("inputs", {}).get("source_path") or man["config"]["source"]
    model_input = {"source": config.model, "path": str(cut_dir.resolve()), "hashes": {"config.json": file_sha256(cut_dir / "config.json")}}
    return heal_layers(config, reference, list(man["outputs"]["kept_layers"]), {"model": model_input, "kept_from": "cut manifest"},
                       echo=echo, inputs_on_disk=[cut_dir])


def heal_layers(config: HealConfig, reference: str, kept: list[int], inputs: dict[str, Any], echo: Any = None,
                inputs_on_disk: tuple[Path, ...] | list[Path] = ()) -> HealResult:
    """Heal the cut of ``reference`` that keeps source layers ``kept``, as ``config`` says, into ``config.out``."""
    from ..artifacts.card import write_card
    from ..artifacts.manifest import write_manifest
    from ..surgery.cut import source_inputs

    started = time.time()
    out = Path(config.out)
    ref_dir = resolve_source(reference)
    check_new_output(out, config.force, [*inputs_of(config), ("reference", str(ref_dir)), *(("cut", str(p)) for p in inputs_on_disk)])
    ckpt = open_checkpoint(ref_dir)
    layout = infer_layout(read_config(ref_dir), list(ckpt.tensors))
    gaps = find_gaps(kept, layout.num_layers)
    if not gaps:
        raise DowncycleError(f"the cut keeps all {layout.num_layers} layers: nothing to heal")
    if config.method != "linear":
        from .layer import resolve_loss

        for g in gaps:
            resolve_loss(config.loss, g)
    calib, ref, device = _load(config, ref_dir)
    if config.method == "linear":
        from .fit import fit_linear

        tensors, reports, maps = fit_linear(ref, calib.input_ids, gaps, kept, layout.prefix, config)
        layers = list(kept)
    else:
        from .fit import fit_layers

        tensors, reports, layers = fit_layers(ref, calib.input_ids, gaps, kept, layout.prefix, config, device, echo)
        maps = {}
    layerwise = ref.layerwise
    del ref
    from .write import write_healed

    with atomic_output_dir(out, force=config.force) as tmp:
        outputs = write_healed(tmp, str(ref_dir), layers, tensors)
        outputs.update({"method": config.method, "gaps": reports, "healed_tensors": sorted(tensors),
                        "calibration": calib.provenance(), "layerwise": layerwise,
                        "seconds": round(time.time() - started, 2)})
        all_inputs = {**inputs, "reference": source_inputs(reference, ref_dir, ckpt), "data": calib.provenance()}
        write_manifest(tmp, "heal", to_dict(config), all_inputs, outputs, hashed={**output_dict(config), "kept": kept})
        write_card(tmp)
    return HealResult(out, config.method, layers, layout.num_layers, reports, time.time() - started, maps)


def _load(config: HealConfig, ref_dir: Path) -> tuple[Any, Reference, Any]:
    """The calibration windows (checked against the reference before it loads) and the reference in
    float32: loaded whole, or, with ``--layerwise`` or when it does not fit the device's free memory,
    its skeleton to run one decoder layer at a time."""
    from ..corpus.calibration import model_calibration
    from ..layerwise import fits_in_memory
    from ..loading import load_model, resolve_device

    calib, _ = model_calibration(ref_dir, config.data, samples=config.samples, seq_len=config.seq_len,
                                 text_field=config.text_field, trust_remote_code=config.trust_remote_code, corpus=True)
    if calib.input_ids.shape[0] < config.batch_size:
        raise DowncycleError(f"{config.data}: {calib.input_ids.shape[0]} calibration windows, fewer than one batch of {config.batch_size}")
    device = resolve_device(config.device)
    layerwise = config.layerwise if config.layerwise is not None else not fits_in_memory(ref_dir, "float32", device)
    if layerwise:
        from ..layerwise import open_layerwise

        lw = open_layerwise(ref_dir, dtype="float32", device=device, trust_remote_code=config.trust_remote_code)
        return calib, Reference(lw=lw), lw.device
    model = load_model(ref_dir, dtype="float32", device=device, trust_remote_code=config.trust_remote_code)
    model.requires_grad_(False)
    return calib, Reference(model), next(model.parameters()).device


def summary(result: HealResult) -> str:
    """What ``downcycle heal`` wrote, a line per gap."""
    lines = [f"wrote {result.out}: {result.method} replacement of {len(result.gaps)} gap(s), {len(result.layers)} of "
             f"{result.source_layers} layers, {result.seconds:.1f} s"]
    for g in result.gaps:
        if result.method == "linear":
            ratio = g.get("residual_ratio")
            lines.append((f"  gap {g['gap']} (after layer {g['after_layer']}): residual per token {g['residual_before']:.4g} -> "
                          f"{g['residual_after']:.4g}") + (f" ({ratio:.1%} of the plain cut's)" if ratio is not None else ""))
        else:
            b, a = g["held_out_before"], g["held_out_after"]
            lines.append(f"  gap {g['gap']}: one layer for {g['replaces']}, held-out {g['loss']} {b['loss']:.4g} -> {a['loss']:.4g}")
    return "\n".join(lines)
