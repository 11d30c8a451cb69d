"""``downcycle run`` and ``sweep``: a YAML recipe's stages chained through their directories and manifests.

Modules: :mod:`.recipe_file` (the YAML recipe), :mod:`.recipe_stages` (its stages, each with the command
it runs and that command's config), :mod:`.run` (``run_recipe``, ``run_sweep``: skipping what is done,
resuming), :mod:`.plans` (each strategy's cut plan from the one analysis), :mod:`.sweep` (the
size-quality stage), :mod:`.names` (every name a recipe gives, checked before anything runs).
"""
