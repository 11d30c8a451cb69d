"""Linear replacement (ReplaceMe, Shopkhoev et al., arXiv 2505.02819): a dropped run of layers
replaced by one d x d linear map T, fitted in closed form and folded into the model, no training.

For a gap after kept layer ``b``, on calibration tokens through the uncut reference:

- ``X`` = the MLP block's output of layer ``b`` (before it joins the residual stream);
- ``R`` = the state leaving layer ``b`` minus ``X`` (the residual stream without the MLP's part);
- ``Y`` = the state leaving the gap (entering the next kept layer, or the final norm) minus ``R``.

The plain cut computes ``R + X``; the healed model computes ``R + X·T`` with
``T = (XᵀX + λI)⁻¹ XᵀY``, the least-squares map, ``λ = ridge · trace(XᵀX) / d``. Because ``X`` is the
output of the MLP's last linear map (``X = a·Wᵀ + b``), ``X·T = a·(TᵀW)ᵀ + Tᵀb``: T is folded into
that projection's weight and bias exactly, so the output is a plain checkpoint of the cut's shape.
The sums ``XᵀX``, ``XᵀY``, ``ΣY²`` and ``ΣX·Y`` are accumulated in float64 over batches: memory is
independent of the number of calibration tokens, and the fit's residual before (``T = I``) and after
is computed from them without keeping a token.

Every gap is fitted from the *reference's* states (one pass calibrates every gap, and every cut of a
recipe, at once), as ReplaceMe does for one block; with several gaps, later gaps do not see the earlier
ones' corrections. A family whose MLP output is normalised before the residual add (Gemma 2/3's and
OLMo 2's ``post_feedforward_layernorm``) cannot take the fold exactly; it is refused (and every fold
is checked on a calibration batch: the healed layer's output must equal ``R + X·T``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import DowncycleError
from .gaps import Gap

__all__ = ["LinearFit", "fold", "solve"]


@dataclass
class LinearFit:
    """Running sums for one gap (float64), and the map once solved."""

    gap: Gap
    xtx: Any = None  # (d, d)
    xty: Any = None  # (d, d)
    yty: float = 0.0  # Σ ||Y||²
    tokens: int = 0
    t: Any = None  # (d, d) once solved
    report: dict[str, Any] = field(default_factory=dict)

    def add(self, x: Any, y: Any) -> None:
        """Accumulate one batch: ``x``, ``y`` of shape (..., d)."""
        x = x.reshape(-1, x.shape[-1]).double()
        y = y.reshape(-1, y.shape[-1]).double()
        if self.xtx is None:
            d = x.shape[1]
            self.xtx, self.xty = x.new_zeros(d, d), x.new_zeros(d, d)
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.yty += float((y * y).sum())
        self.tokens += int(x.shape[0])

    def residual(self, t: Any) -> float:
        """Σ ||Y − X·T||² over the accumulated tokens, from the sums alone."""
        return self.yty - 2.0 * float((t * self.xty).sum()) + float((t * (self.xtx @ t)).sum())


def solve(fit: LinearFit, ridge: float) -> Any:
    """Solve ``fit`` in float64: ``T = (XᵀX + λI)⁻¹XᵀY`` with ``λ = ridge · trace(XᵀX)/d``; fills ``fit.report``
    with λ and the mean squared residual per token before (the plain cut, T = I) and after."""
    import torch

    if fit.xtx is None or fit.tokens == 0:
        raise DowncycleError(f"gap {fit.gap.name}: no calibration tokens")
    d = fit.xtx.shape[0]
    lam = ridge * float(torch.trace(fit.xtx)) / d
    a = fit.xtx + lam * torch.eye(d, dtype=fit.xtx.dtype, device=fit.xtx.device)
    try:
        fit.t = torch.linalg.solve(a, fit.xty)
    except RuntimeError:  # singular: a dead MLP output direction with ridge 0
        raise DowncycleError(f"gap {fit.gap.name}: XᵀX is singular; raise --ridge (now {ridge})") from None
    eye = torch.eye(d, dtype=fit.xtx.dtype, device=fit.xtx.device)
    before, after = fit.residual(eye) / fit.tokens, fit.residual(fit.t) / fit.tokens
    fit.report = {"gap": fit.gap.name, "after_layer": fit.gap.before, "dropped": fit.gap.size, "tail": fit.gap.tail,
                  "tokens": fit.tokens, "lambda": lam, "residual_before": before, "residual_after": after,
                  "residual_ratio": after / before if before > 0 else None, "target_energy": fit.yty / fit.tokens}
    return fit.t


def fold(t: Any, weight: Any, bias: Any | None, conv1d: bool) -> tuple[Any, Any | None]:
    """The down projection's new weight and bias (float64 math, cast back) with ``T`` folded in.

    ``nn.Linear`` stores ``W`` as [out = d, in]: ``X·T = a·(TᵀW)ᵀ + Tᵀb``. GPT-2's ``Conv1D`` stores
    [in, out = d]: ``X·T = a·(W·T) + T ᵀb``.
    """
    w = weight.detach().double()
    t = t.to(w.device)
    new_w = (w @ t) if conv1d else (t.T @ w)
    new_b = None if bias is None else (t.T @ bias.detach().double())
    return new_w.to(weight.dtype), None if new_b is None else new_b.to(bias.dtype)
