"""Every name a recipe gives, resolved against its registry before the first stage runs.

A recipe's stages can run for hours; a mistyped task, healing method, distillation loss, optimizer
or metric must stop ``downcycle run`` (and ``--dry-run``) at once, at its place in the recipe, not
when the stage that reads it finally starts. Cut strategies and the corpora that healing runs name
are resolved as the recipe is read (:mod:`.recipe_file`); the rest are here, where the registries
(:mod:`downcycle.registries`) may be imported.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import DowncycleError
from ..registries import load_registry
from .recipe_file import Recipe
from .recipe_values import Where

__all__ = ["HEAL_NAMES", "check_names"]

# heal[] option -> (its registry, what one entry is called)
HEAL_NAMES = {"method": ("methods", "training method"), "distill_loss": ("distill_losses", "distillation loss"),
              "optimizer": ("optimizers", "optimizer")}


def check_names(recipe: Recipe) -> None:
    """Refuse a name of ``recipe`` that its registry does not hold.

    Raises:
        DowncycleError: ``RECIPE: eval.tasks: unknown task 'helaswag' (known: ...)`` and the like.
    """
    w = Where(recipe.path)
    from ..analysis.analyze import check_metric
    from ..analysis.strategies import get_strategy
    from ..evaluation.tasks import get_task

    for name in [t.strip() for t in str(recipe.eval.get("tasks", "loss")).split(",") if t.strip()]:
        _at(w, "eval.tasks", lambda n=name: get_task(n))
    for i, cut in enumerate(recipe.cuts):
        if cut.metric is not None:
            _at(w, f"cuts[{i}].metric", lambda c=cut: check_metric(get_strategy(c.strategy), c.metric))
    for i, heal in enumerate(recipe.heal):
        if heal.activation_level:  # `downcycle heal`'s options, checked by its config as the recipe was read
            continue
        for key, (registry, what) in HEAL_NAMES.items():
            value = heal.options.get(key)
            known = list(load_registry(registry)) + (list(load_registry("heal_methods")) if key == "method" else [])
            if value is not None and value not in known:
                raise w.error(f"heal[{i}].{key}", f"unknown {what} {value!r} (known: {', '.join(known)}; see `downcycle ls {registry}`)")


def _at(w: Where, where: str, check: Callable[[], object]) -> None:
    """Run ``check``; its error is reported at ``where`` in the recipe."""
    try:
        check()
    except DowncycleError as e:
        raise w.error(where, str(e)) from None
