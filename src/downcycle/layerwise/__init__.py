"""Running a model's own decoder layers one at a time from its safetensors files, for models larger
than the memory at hand (the quantisation tools' way: AutoGPTQ's ``quantize``, llm-compressor's
sequential pipeline, AirLLM's meta-device skeleton).

:mod:`.skeleton` builds the model with its parameters on the meta device, loads what lies outside
the decoder layers (embeddings, final norm, head) and materialises one layer at a time from the
memory-mapped files; :mod:`.engine` records what the model passes each layer (masks, position
embeddings: per layer, so sliding and full attention layers each get their own) and then runs every
calibration or evaluation batch through layer 0, then layer 1, ..., the states between layers kept
in :mod:`.store` (memory up to a budget, then disk). No family's math is written again here: the
layers, the embedding, the norm and the head are ``transformers``' own modules.
"""

from .engine import LayerwiseRun, run_layerwise, run_tree
from .memory import fits_in_memory, weight_bytes
from .skeleton import LayerwiseModel, open_layerwise
from .store import StateStore

__all__ = ["LayerwiseModel", "LayerwiseRun", "StateStore", "fits_in_memory", "open_layerwise", "run_layerwise", "run_tree", "weight_bytes"]
