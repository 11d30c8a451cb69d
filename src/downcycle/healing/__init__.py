"""Healing a depth cut at the level of activations, without training the whole model; plain
Hugging Face checkpoints out.

- :mod:`.gaps` -- the runs of dropped layers of a cut (torch-free);
- :mod:`.states` -- one pass of calibration text through the uncut reference, the states each gap
  needs captured by hooks (the model's own modules run, nothing re-derived);
- :mod:`.linear` -- linear replacement (ReplaceMe, arXiv 2505.02819): per gap a d x d map T fitted by
  least squares from sums of XᵀX and XᵀY in float64, folded into the down projection of the last
  kept layer before the gap;
- :mod:`.layer` -- layer replacement (LLM-Streamline, arXiv 2403.19135): per gap one decoder layer
  trained alone on the cached states entering and leaving the gap;
- :mod:`.write` -- the output: the reference cut to the healed layer list, its changed tensors
  written over their bytes;
- :mod:`.run` -- ``downcycle heal`` (and ``cut --heal``).
"""

# `downcycle ls heal_methods`: the activation-level methods (recipe heal entries with these methods run `downcycle heal`)
METHODS = {
    "linear": "linear replacement: a least-squares map per gap, folded into the down projection before it (ReplaceMe)",
    "layer": "layer replacement: one decoder layer per gap, trained alone on the reference's cached states (LLM-Streamline)",
}
