"""``--reference``: the model the loss task's ``kl_ref`` is measured against, shared by the models
of one evaluation, in memory or layer by layer as the evaluated model runs (both run the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..loading import load_model, resolve_device, resolve_source
from ..recipe import EvalConfig

__all__ = ["ReferenceModel"]


class ReferenceModel:
    """``cfg.reference``, loaded once, when a model first needs it (a resumed run may need it for
    none; the reference itself needs it only among cuts run together, :mod:`.shared_cuts`).

    Layer by layer it is a :class:`~downcycle.evaluation.layerwise_loss.ReferenceRows`: the
    reference's rows of the latest batches are kept, so that its layers run once for all the models
    that score the same batches; :meth:`close` releases them.
    """

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg
        self.path = resolve_source(cfg.reference).resolve() if cfg.reference is not None else None
        self._model: Any = None
        self._rows: Any = None

    def is_model(self, path: Path) -> bool:
        return self.path is not None and Path(path).resolve() == self.path

    def model(self, layerwise: bool = False) -> Any:
        """The reference in memory, or (``layerwise``) its skeleton run layer by layer, with the
        run's dtype, device and ``trust_remote_code``."""
        cfg = self.cfg
        device = resolve_device(cfg.device)
        if layerwise:
            if self._rows is None:
                from ..layerwise import open_layerwise
                from .layerwise_loss import ReferenceRows
                from .layerwise_target import LayerwiseTarget

                lw = open_layerwise(self.path, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
                self._rows = ReferenceRows(LayerwiseTarget(lw))
            return self._rows
        if self._model is None:
            self._model = load_model(self.path, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
        return self._model

    def close(self) -> None:
        """Release the rows kept layer by layer (memory and spill directory)."""
        if self._rows is not None:
            self._rows.close()
