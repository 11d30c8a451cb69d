"""``downcycle run`` and ``sweep``: a YAML recipe's stages chained through their directories and manifests.

Modules: :mod:`.recipe_file` (the YAML recipe), :mod:`.stages` (its stages and their configs),
:mod:`.run` (``run_recipe``, ``run_sweep``: skipping what is done, resuming), :mod:`.plans` (each
strategy's cut plan from the one analysis), :mod:`.sweep` (the size-quality stage) and
:mod:`.cut_keep` (``cut --keep``: an analysis, then the cut).
"""
