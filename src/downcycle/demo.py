"""``downcycle demo``: the seed's experiment in miniature, offline, on a CPU, in a few minutes.

Every stage runs through the same library functions as the CLI, each writing its own directory:

1. ``corpus/``: the shipped public-domain corpus, packed with the shipped BPE tokenizer;
2. ``reference/``: a small Llama pretrained from scratch on it (a stand-in until the shipped,
   properly pretrained reference model exists);
3. ``analysis/``: layer distances and Block Influence on calibration text, and a plan;
4. ``cut-first/`` (the seed's first-k) and ``cut-block/`` (Gromov et al.'s best block), 75% depth;
5. ``healed-*``: each cut healed by LoRA, and the block cut also by distillation from the reference;
6. ``eval/`` and ``compare/``: validation loss, perplexity and bits per byte of every model, as
   a table and bar charts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import DowncycleError
from .recipe import AnalyzeConfig, CompareConfig, CutConfig, DataConfig, DemoConfig, EvalConfig, TrainConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SOURCE_LAYERS, KEEP = 8, "0.75"
# The reference: 8 layers, hidden 128, 8192-token vocabulary (~3.4M parameters).
REFERENCE_SHAPE = dict(num_hidden_layers=SOURCE_LAYERS, hidden_size=128, intermediate_size=384, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=8192, max_position_embeddings=256, initializer_range=0.02,
                       tie_word_embeddings=True)
SEQ_LEN = 128
PRETRAIN = dict(method="full", lr=3e-3, warmup_steps=30, micro_batch=16)
HEAL = dict(lr=1e-3, warmup_steps=10, micro_batch=16)


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_demo(config: DemoConfig) -> Path:
    """Run the miniature experiment into ``config.out``; returns the compare directory."""
    from transformers.utils import logging as hf_logging

    from .analysis.run import run_analyze
    from .cut import cut
    from .data.corpus import build_corpus
    from .evaluation.run import run_eval
    from .report.compare import run_compare
    from .tiny import build_tiny
    from .training import run_train

    tokenizer, sources = EXAMPLES / "tokenizer", sorted(str(p) for p in (EXAMPLES / "corpus").glob("*.jsonl.gz"))
    if not (tokenizer / "tokenizer.json").is_file() or not sources:
        raise DowncycleError(f"{EXAMPLES}: the shipped tokenizer and corpus are missing (run from a clone of the repository)")
    hf_logging.disable_progress_bar()  # the demo prints its own lines
    out = config.out
    if out.exists() and not config.force:
        raise DowncycleError(f"{out}: already exists (pass --force to replace it)")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    _step("data: pack the shipped corpus with the shipped tokenizer")
    corpus = build_corpus(DataConfig(tokenizer=str(tokenizer), source=sources, out=out / "corpus", tokens=config.tokens, seq_len=SEQ_LEN,
                                     val=0.02, progress=False))

    _step(f"reference: pretrain a {SOURCE_LAYERS}-layer Llama from scratch on it")
    init = build_tiny("llama", out / "reference-init", **REFERENCE_SHAPE)
    for f in tokenizer.iterdir():
        shutil.copy2(f, init / f.name)
    ref = run_train(TrainConfig(model=str(init), data=corpus, out=out / "reference", eval_max_seqs=64, progress=False,
                          max_steps=config.pretrain_steps, **PRETRAIN))
    shutil.rmtree(init)
    print(f"reference val loss {ref.val_loss:.3f} after {ref.tokens:,} tokens ({ref.tokens_per_second:,.0f} tokens/s)")

    _step("analyze: layer distances and Block Influence, 75% depth")
    analysis = run_analyze(AnalyzeConfig(model=str(ref.out), data=sources[0], out=out / "analysis", keep=KEEP, strategy="block",
                                         samples=32, seq_len=SEQ_LEN, progress=False))
    print(f"block strategy keeps {analysis.plan.kept_layers}")

    _step("cut: the seed's first-k and the best block")
    keep = len(analysis.plan.kept_layers)
    cuts = {"first": cut(CutConfig(source=str(ref.out), out=out / "cut-first", layers=f"0-{keep - 1}")),
            "block": cut(CutConfig(source=str(ref.out), out=out / "cut-block", plan=analysis.out / "plan.json"))}

    _step("train: heal each cut (LoRA; and distillation from the reference)")
    healed = {}
    runs = [("first", "lora", {"lora_r": 16}), ("block", "lora", {"lora_r": 16}),
            ("block", "distill", {"teacher": str(ref.out), "distill_alpha": 0.5})]
    for name, method, extra in runs:
        result = run_train(TrainConfig(model=str(cuts[name].out), data=corpus, out=out / f"healed-{name}-{method}", method=method,
                                       eval_max_seqs=64, progress=False, max_steps=config.heal_steps, **HEAL, **extra))
        healed[f"{name}-{method}"] = result
        print(f"{name}-{method}: val loss {result.val_loss_start:.3f} -> {result.val_loss:.3f}")

    _step("eval and compare: validation loss, perplexity and bits per byte")
    models = [ref.out, *(c.out for c in cuts.values()), *(h.out for h in healed.values())]
    evaluation = run_eval(EvalConfig(models=[str(m) for m in models], out=out / "eval", tasks="loss", data=str(corpus),
                                     window=SEQ_LEN, progress=False))
    results = [str(evaluation.out / Path(m).name / "results.json") for m in models]  # reference, cuts, healed
    compare = run_compare(CompareConfig(results=results, out=out / "compare", reference=ref.out.name))
    print(compare.markdown)
    print(f"\ndone: {compare.out} holds the table and plots; every directory under {out} has a downcycle.json manifest")
    return compare.out
