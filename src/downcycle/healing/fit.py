"""The two healing fits on the reference (:class:`.reference.Reference`: in memory or layer by layer):
they capture what each gap needs in one calibration pass and return the output's changed tensors, by
checkpoint name."""

from __future__ import annotations

from typing import Any

from ..errors import DowncycleError
from .gaps import Gap
from .reference import Reference
from .states import Call, Needs, down_projection, final_norm_and_head, mlp_module, mlp_output_norm, norm_offset

__all__ = ["fit_layers", "fit_linear"]

_EXACT = 1e-4  # the folded layer's output against R + X·T, relative to its largest value (float32 rounding is ~1e-6)


def _target(states: dict, gap: Gap) -> Any:
    return states["final"] if gap.tail else states[("in", gap.end)]


def fit_linear(ref: Reference, windows: Any, gaps: list[Gap], kept: list[int], prefix: str,
               config: Any) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Linear replacement of every gap: the folded tensors (the down projection's, or the post-MLP
    norm's weight for a diagonal map; by checkpoint name of the cut that keeps ``kept``), each gap's
    report, and each gap's T (a d x d matrix, or the d scales of a diagonal map)."""
    from .linear import LinearFit, solve

    hidden = ref.model.config.get_text_config().hidden_size
    needs = Needs(inputs={g.start for g in gaps} | {g.end for g in gaps if not g.tail}, mlp={g.before for g in gaps},
                  final=any(g.tail for g in gaps), first={g.before for g in gaps}, calls_of={g.before for g in gaps})
    fits = {g: LinearFit(g, diagonal=mlp_output_norm(ref.layers[g.before]) is not None) for g in gaps}
    first: dict | None = None
    calls: dict[int, Call] = {}
    for states, calls in ref.capture(windows, config.batch_size, needs, config.progress, desc="linear replacement"):
        first = first or states
        for g in gaps:
            x = states[("mlp", g.before)]
            r = states[("in", g.start)] - x
            fits[g].add(x, _target(states, g) - r)
    tensors, reports, maps = {}, [], {}
    for g in gaps:
        t = solve(fits[g], config.ridge)
        with ref.layer(g.before) as layer:
            module_name, module, params = _folded(layer, hidden, t)
            fits[g].report["folded_into"] = module_name
            fits[g].report["exact_fold_error"] = _check_fold(layer, first, calls[g.before], g, module, params, t)
        for pname, value in params.items():
            tensors[f"{prefix}{kept.index(g.before)}.{module_name}.{pname}"] = value
        reports.append(fits[g].report)
        maps[g.name] = t
    return tensors, reports, maps


def _folded(layer: Any, hidden: int, t: Any) -> tuple[str, Any, dict[str, Any]]:
    """Where ``t`` folds in ``layer`` and that module's new parameters: the post-MLP norm's scale (a
    diagonal ``t``), else the MLP's down projection's weight and bias."""
    from .linear import fold, fold_norm

    norm = mlp_output_norm(layer)
    if norm is not None:
        return norm[0], norm[1], {"weight": fold_norm(t, norm[1].weight, norm_offset(norm[1]))}
    mlp_name, mlp = mlp_module(layer)
    down_name, down = down_projection(mlp, hidden)
    weight, bias = fold(t, down.weight, down.bias, type(down).__name__ == "Conv1D")
    return f"{mlp_name}.{down_name}", down, {"weight": weight, **({} if bias is None else {"bias": bias})}


def _check_fold(layer: Any, first: dict, call: Call, gap: Gap, module: Any, params: dict[str, Any], t: Any) -> float:
    """Run the kept layer before the gap on the first calibration batch's input, as the model calls it,
    with the fold in place: its output must be R + X·T. Returns the relative error; refuses the family
    when it is not float rounding."""
    import torch

    x = first[("mlp", gap.before)].double()
    t = t.to(x.device)
    expected = first[("in", gap.start)].double() - x + (x * t if t.dim() == 1 else x @ t)
    saved = {name: getattr(module, name).data for name in params}
    for name, value in params.items():
        getattr(module, name).data = value
    try:
        with torch.no_grad():
            out = layer(first[("in", gap.before)], *call[0], **call[1])
    finally:
        for name, value in saved.items():
            getattr(module, name).data = value
    out = out[0] if isinstance(out, tuple) else out
    err = float((out.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-30))
    if err > _EXACT:
        raise DowncycleError(f"linear replacement: the map folded into {type(module).__name__} of layer {gap.before} does not give "
                             f"R + X·T (relative error {err:.2g}): this family does not add its MLP output to the residual as is")
    return err


def fit_layers(ref: Reference, windows: Any, gaps: list[Gap], kept: list[int], prefix: str, config: Any, device: Any,
               echo: Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[int]]:
    """Layer replacement of every gap: the trained layers' tensors (by checkpoint name of the output, which keeps
    ``kept`` plus each gap's initial layer), each gap's report, and the output's source layers."""
    from ..loading import resolve_precision
    from .layer import ReplacementRun, resolve_loss, train_replacement

    placed = {g: g.start if config.init == "first" else g.end - 1 for g in gaps}  # the call is that of the layer's place
    needs = Needs(inputs={g.start for g in gaps} | {g.end for g in gaps if not g.tail}, calls_of=set(placed.values()),
                  final=any(g.tail for g in gaps))
    runs = {g: ReplacementRun(g, resolve_loss(config.loss, g)) for g in gaps}
    calls: dict[int, Call] = {}
    for states, calls in ref.capture(windows, config.batch_size, needs, config.progress, desc="layer replacement: states"):
        for g in gaps:
            runs[g].inputs.append(states[("in", g.start)])
            runs[g].targets.append(_target(states, g))
    head = final_norm_and_head(ref.model) if any(r.loss == "kl" for r in runs.values()) else None
    precision = resolve_precision(config.precision, device.type)
    out_layers = sorted(set(kept) | set(placed.values()))
    tensors, reports = {}, []
    for g in gaps:
        runs[g].call = calls[placed[g]]
        with ref.layer(placed[g]) as source:
            layer = train_replacement(runs[g], source, head, epochs=config.epochs, lr=config.lr, seed=config.seed,
                                      precision=precision, kl_fraction=config.kl_fraction, echo=echo)
        position = out_layers.index(placed[g])
        for pname, p in layer.named_parameters():
            tensors[f"{prefix}{position}.{pname}"] = p.detach()
        reports.append({**runs[g].report, "init_layer": placed[g], "position": position})
        runs[g].inputs.clear()
        runs[g].targets.clear()
    if not reports:
        raise DowncycleError("layer replacement: no gap to replace")
    return tensors, reports, out_layers
