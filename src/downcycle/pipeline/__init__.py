"""``downcycle run`` and ``sweep``: a YAML recipe's stages chained through their directories and manifests."""

from .recipe_file import CutSpec, HealSpec, Recipe, load_recipe, parse_recipe
from .run import PipelineResult, plan_stages, run_recipe, run_stages, run_sweep, stage_key
from .stages import Stage, build_stages

__all__ = ["CutSpec", "HealSpec", "PipelineResult", "Recipe", "Stage", "build_stages", "load_recipe", "parse_recipe", "plan_stages",
           "run_recipe", "run_stages", "run_sweep", "stage_key"]
