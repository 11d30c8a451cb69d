"""Width importance (Minitron): how much each MLP neuron, query head and embedding channel carries,
from the activations of one calibration pass.

Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation"
(arXiv:2407.14679), Sec. 2.2, and Sreenivas et al. 2024 (arXiv:2408.11796). What is hooked, per
decoder layer (the modules are named by the model's width layout, inferred from its config and
tensors by :func:`downcycle.architecture.width_layout`, as ``downcycle prune`` slices by):

- MLP neuron ``i``: element ``i`` of the *input* of the down projection (``act(gate) * up`` or
  ``act(fc_in)``), a forward pre-hook. Index ``i`` is row ``i`` of up/gate, column ``i`` of down.
- query head ``j``: its ``head_dim`` slice of the input of the attention output projection
  (transformers lays the heads out head-major, ``(B, T, h, head_dim)``), reduced per token by the
  L2 norm over ``head_dim`` -- the paper's ``||Attn(...)_j||_2``. The KV group of head ``j`` is
  ``j // (h // kv)``; a group's importance is the L2 of its query heads' importances.
- embedding channel ``c``: element ``c`` of the output of every norm of the residual stream -- the
  layer's norms over the hidden size (input / post-attention / pre- and post-feedforward, whichever
  the family has; q/k norms act on heads and are not hooked) -- forward hooks -- and the final
  norm's output, as the output layer's input (a pre-hook, which also stops the forward: the LM
  head is not needed). A family whose norms have no weights (OLMo) scores channels by the last alone.

Aggregation (as Minitron's best-performing choice, mean over the sequence then L2 over the batch):
``s_i = sqrt(sum_b (1/T sum_t a_{b,t,i})^2)`` over the calibration windows ``b``, with per-token
``a = |x|`` (``x`` in float32) for neurons and channels and ``a = ||x_head||_2`` for heads. Each
window's squared mean is summed in float64 and the sum rooted once at the end, so the batch size does not
change the result. Channels: that per norm, then summed over the norms.

Signed or absolute. NVIDIA ModelOpt's Minitron importance (NVIDIA/TensorRT-Model-Optimizer,
modelopt/torch/nas/plugins/megatron.py: the forward hooks on ``linear_fc2``, ``linear_proj`` and the
layer norms, and ``_estimate_hidden_size_importance``) takes the absolute value before the mean
over the sequence (``abs().mean`` over seq, squares summed over the batch, square root at the end;
per-norm L2s summed over the norms). We do the same: gated-MLP products and norm outputs are
signed, so a signed mean lets a unit that swings +5 / -5 score like a dead one; with ``|x|`` a score
is 0 exactly when the activation is 0 on every calibration token, so dead units rank strictly last.
Where we differ from ModelOpt: a head is reduced per token by the L2 over ``head_dim`` before the
sequence mean (the paper's definition; ModelOpt aggregates each channel first and takes the L2 over
``head_dim`` last), and the final norm's output counts toward the channels (ModelOpt hooks only the
norms before attention and MLP). Windows are full length: padding is refused, not masked.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..architecture import HIDDEN, loaded_text_config, text_config, width_layout, width_refusal
from ..errors import DowncycleError
from ..decoder import find_decoder_layers
from .width_pass import StopForward, run_in_memory, run_layer_by_layer

WIDTH_DIR = "width"  # analyze --width: width/scores.json and the plot, beside plan.json
WIDTH_SCORES = "scores.json"
KIND = "width-importance"
AGGREGATION = ("per token |x| of each MLP neuron (the down projection's input) and embedding channel (each norm's output), "
               "and the L2 norm over head_dim of each query head's slice of the output projection's input; mean over the "
               "sequence, then L2 over the batch of calibration windows; channels summed over the norms; a KV group: the L2 "
               "of its query heads' scores")

__all__ = ["AGGREGATION", "KIND", "WIDTH_DIR", "WIDTH_SCORES", "SquaredMeans", "check_width_family", "hooked_modules",
           "kv_group_scores", "width_importance", "width_scores_for_prune", "write_width_files"]


class SquaredMeans:
    """Running ``sum_b (mean_t a[b, t, :])^2`` over batches of per-token values ``a`` ``(B, T, C)``;
    :meth:`l2` is its square root: the mean over the sequence, then the L2 over the batch."""

    def __init__(self) -> None:
        self.total: Any = None  # (C,) float64

    def add(self, values: Any) -> None:
        squares = values.mean(dim=1).double().pow(2).sum(dim=0).cpu()  # (B, T, C) -> (B, C) -> (C,)
        self.total = squares if self.total is None else self.total + squares

    def l2(self) -> Any:
        if self.total is None:
            raise DowncycleError("width importance: a hooked module never ran (no calibration batch reached it)")
        return self.total.sqrt()


def check_width_family(config: dict[str, Any]) -> None:
    """Refuse, before the model loads, a config.json with a feature no width layout expresses
    (:data:`~downcycle.architecture.WIDTH_REFUSED`: experts ...), as transformers reads it (with its
    defaults for the fields config.json omits); the tensors are checked once loaded."""
    cfg, _ = text_config(config)
    why = width_refusal(_with_defaults(cfg))
    if why:
        model_type = cfg.get("model_type") or config.get("model_type") or "unknown"
        raise DowncycleError(f"config.json: width importance cannot score a {model_type!r} model: {why}")


def _with_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` completed by transformers' config class for its model_type (Mixtral's expert count is
    a default); as written where transformers has no such class or refuses the values."""
    from transformers import AutoConfig

    try:
        fields = {k: v for k, v in cfg.items() if k != "model_type"}
        return {**AutoConfig.for_model(cfg.get("model_type") or "", **fields).to_dict(), **cfg}
    except Exception:  # noqa: BLE001 -- an unknown model_type or values its config class refuses: the tensors decide later
        return cfg


def _module_name(tensor: str) -> str:
    return tensor.removesuffix(".weight")


def hooked_modules(model: Any) -> tuple[list[tuple[Any, Any, list[Any]]], Any, dict[str, int]]:
    """Per decoder layer ``(down projection, attention output projection, [norms over the hidden
    size])``, the output layer (whose input is the final norm's output), and the model's sizes, found
    by the width layout inferred from the model's config and its layers' tensors.

    Raises:
        DowncycleError: a model whose width layout is refused, or a module its layout names but the model lacks.
    """
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = width_layout(model.config.to_dict(), shapes, others=False)
    family = found.family
    norms = [_module_name(t) for t, rule in family.layer.items() if rule.norm and rule.axes == (((HIDDEN, 1),),)]
    _, layers = find_decoder_layers(model)
    per_layer = [(_submodule(layer, _module_name(family.down_proj), i), _submodule(layer, _module_name(family.o_proj), i),
                  [_submodule(layer, n, i) for n in norms]) for i, layer in enumerate(layers)]
    head = model.get_output_embeddings()
    if head is None:
        raise DowncycleError(f"width importance: {type(model).__name__} has no output layer")
    return per_layer, head, found.sizes


def _submodule(layer: Any, path: str, index: int) -> Any:
    try:
        return layer.get_submodule(path)
    except AttributeError:
        raise DowncycleError(f"width importance: decoder layer {index} ({type(layer).__name__}) has no module {path}") from None


def kv_group_scores(heads: list[float], kv: int) -> list[float]:
    """A KV group's importance: the L2 of its query heads' (group of head ``j``: ``j // (h // kv)``)."""
    size = len(heads) // kv
    return [sum(x * x for x in heads[g * size : (g + 1) * size]) ** 0.5 for g in range(kv)]


def width_importance(model: Any, batches: Iterable[Any], *, progress: bool = False) -> dict[str, Any]:
    """One forward pass over ``batches`` (``(B, T)`` ids, or :func:`~downcycle.analysis.hidden_stats.as_batches`
    mappings without padding), reduced on the fly; returns the ``scores.json`` document.

    ``model``: a loaded causal LM, or a :class:`~downcycle.layerwise.LayerwiseModel` run one decoder
    layer at a time (the hooks sit on the same modules, each layer's sums gather the batches in the
    same order, the final norm runs on the last states: the same scores).

    Raises:
        DowncycleError: a family without a width layout, padded batches.
    """
    import torch

    from ..layerwise import LayerwiseModel

    lw = model if isinstance(model, LayerwiseModel) else None
    hf = lw.model if lw is not None else model
    cfg = loaded_text_config(hf.config)
    per_layer, head, sizes = hooked_modules(hf)
    heads, kv = sizes["heads"], sizes["kv_heads"]
    ffn = [SquaredMeans() for _ in per_layer]
    attn = [SquaredMeans() for _ in per_layer]
    layer_norms = [m for _, _, ns in per_layer for m in ns]
    norms = [SquaredMeans() for _ in range(len(layer_norms) + 1)]

    def head_values(x: Any) -> Any:
        b, t, width = x.shape
        if width % heads:
            raise DowncycleError(f"width importance: the attention output projection's input has {width} features, "
                                 f"not a multiple of num_attention_heads={heads}")
        return torch.linalg.vector_norm(x.detach().float().reshape(b, t, heads, width // heads), dim=-1)  # (B, T, h)

    shape: list[int] = []  # the batch's (B, T): OPT's MLP runs on the tokens flattened to (B * T, C)

    def tokens(x: Any) -> Any:
        return x.view(*shape, x.shape[-1]) if x.dim() == 2 else x

    def pre_hook(sums: SquaredMeans, per_head: bool):
        def hook(module: Any, args: tuple) -> None:
            x = tokens(args[0])
            sums.add(head_values(x) if per_head else x.detach().float().abs())
        return hook

    def norm_hook(sums: SquaredMeans):
        def hook(module: Any, args: tuple, output: Any) -> None:
            sums.add(tokens(output[0] if isinstance(output, (tuple, list)) else output).detach().float().abs())
        return hook

    def final_hook(module: Any, args: tuple) -> None:
        norms[-1].add(args[0].detach().float().abs())
        raise StopForward

    handles = []
    try:
        for (down, o_proj, _), ffn_sums, attn_sums in zip(per_layer, ffn, attn):
            handles.append(down.register_forward_pre_hook(pre_hook(ffn_sums, False)))
            handles.append(o_proj.register_forward_pre_hook(pre_hook(attn_sums, True)))
        for module, sums in zip(layer_norms, norms):
            handles.append(module.register_forward_hook(norm_hook(sums)))
        if lw is None:
            handles.append(head.register_forward_pre_hook(final_hook))
            samples, seq_len = run_in_memory(model, batches, progress, shape)
        else:
            samples, seq_len = run_layer_by_layer(lw, batches, progress, shape, norms[-1])
    finally:
        for h in handles:
            h.remove()
    ffn_scores = [s.l2().tolist() for s in ffn]
    if len({len(row) for row in ffn_scores}) != 1:
        raise DowncycleError(f"width importance: MLP widths differ between layers ({sorted({len(row) for row in ffn_scores})})")
    head_scores = [s.l2().tolist() for s in attn]
    return {
        "kind": KIND, "aggregation": AGGREGATION, "model_type": getattr(cfg, "model_type", "unknown"), "num_layers": len(per_layer),
        "hidden_size": sizes["hidden"], "intermediate_size": len(ffn_scores[0]), "num_attention_heads": heads,
        "num_key_value_heads": kv, "samples": samples, "seq_len": seq_len,
        "ffn": ffn_scores,
        "heads": head_scores,
        "kv_heads": [kv_group_scores(h, kv) for h in head_scores],
        "hidden": sum(s.l2() for s in norms).tolist(),
    }


def width_scores_for_prune(source_dir: Path, data: str, *, samples: int, seq_len: int, seed: int, device: str = "auto",
                           batch_size: int = 8, text_field: str = "text", tokenizer: str | None = None, dtype: str = "auto",
                           trust_remote_code: bool = False, progress: bool = False) -> dict[str, Any]:
    """The ``scores.json`` document of the model in ``source_dir`` on ``samples`` windows of
    ``seq_len`` tokens of ``data``, read as ``downcycle analyze`` reads them (its tokenizer, EOS
    between documents, windows in source order). The windows are deterministic, so ``seed`` only
    seeds torch's generator (an eval-mode forward draws nothing)."""
    import torch

    from ..corpus.calibration import model_calibration
    from ..layerwise import fits_in_memory, open_layerwise
    from ..loading import load_model, read_config, resolve_device
    from .hidden_stats import as_batches

    check_width_family(read_config(Path(source_dir)))
    calib, _ = model_calibration(Path(source_dir), data, samples=samples, seq_len=seq_len, text_field=text_field,
                                 tokenizer=tokenizer, trust_remote_code=trust_remote_code)
    torch.manual_seed(seed)
    device = resolve_device(device)
    if fits_in_memory(Path(source_dir), dtype, device):
        model = load_model(source_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    else:  # one decoder layer at a time: the same scores
        model = open_layerwise(source_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return width_importance(model, as_batches(calib.input_ids, batch_size), progress=progress)


def write_width_files(directory: Path, scores: dict[str, Any], plots: bool = True) -> list[str]:
    """``scores.json`` and (with ``plots``, needs matplotlib) ``importance.png`` into an existing
    ``directory``; returns the names written."""
    import json

    (Path(directory) / WIDTH_SCORES).write_text(json.dumps(scores, indent=1) + "\n")
    if not plots:
        return [WIDTH_SCORES]
    from .width_plots import plot_width

    return [WIDTH_SCORES, plot_width(scores, Path(directory)).name]
