"""``downcycle demo``: the embedded default, offline, on a CPU.

For now (until the shipped reference model and the full pipeline land) it builds a small random
Llama locally, cuts it to 75% depth with the seed's first-k strategy, reloads the cut with
transformers and checks that its logits equal the source model with the same layers dropped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .cut import cut
from .errors import DowncycleError
from .recipe import CutConfig, DemoConfig

SOURCE_LAYERS = 8
KEEP = "0-5"  # the seed's first-k at 75% depth (Llama-3-8B 32 -> 24 layers, here 8 -> 6)


def run_demo(config: DemoConfig) -> Path:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from .tiny import build_tiny

    hf_logging.disable_progress_bar()  # the demo prints its own lines
    out = config.out
    if out.exists() and not config.force:
        raise DowncycleError(f"{out}: already exists (pass --force to replace it)")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ref_dir = build_tiny("llama", out / "reference", num_hidden_layers=SOURCE_LAYERS, hidden_size=64, intermediate_size=128)
    print(f"reference: {ref_dir} ({SOURCE_LAYERS} layers, random weights)")
    result = cut(CutConfig(source=str(ref_dir), out=out / "cut", layers=KEEP))
    print(f"cut:       {result.out} (kept layers {KEEP} of {SOURCE_LAYERS}, {result.bytes_written / 1e6:.2f} MB)")
    ref = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32).eval()
    small = AutoModelForCausalLM.from_pretrained(result.out, dtype=torch.float32).eval()
    ref.model.layers = ref.model.layers[: len(result.kept_layers)]
    ref.config.num_hidden_layers = len(result.kept_layers)
    ids = torch.randint(0, ref.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ref(ids).logits - small(ids).logits).abs().max().item()
    print(f"check:     max |logits(cut) - logits(reference with layers {SOURCE_LAYERS - 2}-{SOURCE_LAYERS - 1} dropped)| = {diff:.2e}")
    if diff > 1e-4:
        raise DowncycleError(f"demo check failed: the cut model's logits differ by {diff}")
    print(f"done: see {result.out}/downcycle.json and {result.out}/mergekit.yaml")
    return out
