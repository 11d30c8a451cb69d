"""Layer importance: which decoder layers a model can lose, measured in one pass, turned into a cut plan.

- :mod:`.hidden_stats` -- the one-pass streaming reduction (all pairwise cosines / angular distances)
- :mod:`.metrics`, :mod:`.strategies` -- registries (``downcycle ls``)
- :mod:`.nll` -- SLEB-style greedy removal by calibration NLL
- :mod:`.calibration` -- calibration text (any :mod:`downcycle.corpus.sources` source), tokenized and packed
- :mod:`downcycle.decoder` (below the stage packages: healing uses it too) -- the decoder layers of a loaded model, found generically; layers skipped in place
- :mod:`.plots` -- heatmap of d(l, n), per-layer bars
- :mod:`.analyze` -- the in-memory API; :mod:`.run` -- ``downcycle analyze`` (files, plots, manifest)

Importing this package does not import torch.
"""
