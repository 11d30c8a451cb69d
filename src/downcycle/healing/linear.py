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
ones' corrections.

A family whose MLP output is normalised before the residual add (Gemma 2/3's and OLMo 2's
``post_feedforward_layernorm``: ``X = n(m)·(c + w)``, with ``n`` the RMS normalisation of the MLP's
output ``m`` and ``c`` 1 for Gemma's ``(1 + w)`` form, 0 for OLMo 2's) has no linear map between ``X``
and the residual stream to fold a full ``T`` into: a map before the norm would be normalised away.
There ``T`` is diagonal, ``t_j = Σ x_j·y_j / (Σ x_j² + λ)`` (the least squares of each channel alone),
folded into the norm's scale exactly: ``c + w' = (c + w)·t``. d parameters instead of d², the fit's
residual reports how much of the gap that recovers. Every fold is checked on a calibration batch: the
healed layer's output must equal ``R + X·T``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import DowncycleError
from .gaps import Gap

__all__ = ["LinearFit", "fold", "fold_norm", "solve"]


@dataclass
class LinearFit:
    """Running sums for one gap (float64), and the map once solved (``diagonal``: per channel, T a
    vector of d scales; the sums then their diagonals)."""

    gap: Gap
    diagonal: bool = False
    xtx: Any = None  # (d, d), diagonal: (d,)
    xty: Any = None  # (d, d), diagonal: (d,)
    yty: float = 0.0  # Σ ||Y||²
    tokens: int = 0
    t: Any = None  # (d, d) once solved
    report: dict[str, Any] = field(default_factory=dict)

    def add(self, x: Any, y: Any) -> None:
        """Accumulate one batch: ``x``, ``y`` of shape (..., d)."""
        x = x.reshape(-1, x.shape[-1]).double()
        y = y.reshape(-1, y.shape[-1]).double()
        if self.xtx is None:
            shape = (x.shape[1],) if self.diagonal else (x.shape[1], x.shape[1])
            self.xtx, self.xty = x.new_zeros(shape), x.new_zeros(shape)
        self.xtx += (x * x).sum(0) if self.diagonal else x.T @ x
        self.xty += (x * y).sum(0) if self.diagonal else x.T @ y
        self.yty += float((y * y).sum())
        self.tokens += int(x.shape[0])

    def residual(self, t: Any) -> float:
        """Σ ||Y − X·T||² over the accumulated tokens, from the sums alone."""
        if self.diagonal:
            return self.yty - 2.0 * float((t * self.xty).sum()) + float((t * t * self.xtx).sum())
        return self.yty - 2.0 * float((t * self.xty).sum()) + float((t * (self.xtx @ t)).sum())


def solve(fit: LinearFit, ridge: float) -> Any:
    """Solve ``fit`` in float64: ``T = (XᵀX + λI)⁻¹XᵀY`` with ``λ = ridge · trace(XᵀX)/d``; fills ``fit.report``
    with λ and the mean squared residual per token before (the plain cut, T = I) and after."""
    import torch

    if fit.xtx is None or fit.tokens == 0:
        raise DowncycleError(f"gap {fit.gap.name}: no calibration tokens")
    d = fit.xtx.shape[0]
    diag = fit.xtx if fit.diagonal else torch.diagonal(fit.xtx)
    lam = ridge * float(diag.sum()) / d
    eye = torch.ones(d, dtype=fit.xtx.dtype, device=fit.xtx.device)
    if fit.diagonal:
        if bool((fit.xtx + lam == 0).any()):
            raise DowncycleError(f"gap {fit.gap.name}: a channel of X is zero on every token; raise --ridge (now {ridge})")
        fit.t = fit.xty / (fit.xtx + lam)
    else:
        eye = torch.diag(eye)
        try:
            fit.t = torch.linalg.solve(fit.xtx + lam * eye, fit.xty)
        except RuntimeError:  # singular: a dead MLP output direction with ridge 0
            raise DowncycleError(f"gap {fit.gap.name}: XᵀX is singular; raise --ridge (now {ridge})") from None
    before, after = fit.residual(eye) / fit.tokens, fit.residual(fit.t) / fit.tokens
    fit.report = {"gap": fit.gap.name, "after_layer": fit.gap.before, "dropped": fit.gap.size, "tail": fit.gap.tail,
                  "map": "diagonal" if fit.diagonal else "full",
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


def fold_norm(t: Any, weight: Any, offset: float) -> Any:
    """The post-MLP norm's new weight with the diagonal ``t`` folded in: ``offset + w' = (offset + w)·t``
    (``offset`` 1 for Gemma's ``(1 + w)`` RMSNorm, 0 for a plain scale)."""
    w = weight.detach().double()
    return ((offset + w) * t.to(w.device) - offset).to(weight.dtype)
