"""A small but complete experiment for the report tests, built from the library functions in well
under a minute: a tiny reference outside the experiment directory, an analysis, two cuts, two healing runs
and an evaluation, under names unlike the demo's (discovery goes by manifests, not names)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REFERENCE_README = "---\nlicense: apache-2.0\nlanguage: en\n---\n# the reference's own card\n"


def build_experiment(root: Path, reference: Path, corpus: Path) -> Path:
    """Write the experiment into ``root / "exp"`` and return that directory.

    Args:
        reference: a tiny Llama with the shipped tokenizer (copied to ``root / "ref"``, outside the
            experiment, with a card declaring a licence).
        corpus: a corpus directory written by `downcycle data` with the reference's tokenizer.
    """
    from downcycle.analysis.run import run_analyze
    from downcycle.surgery.cut import cut
    from downcycle.evaluation.run import run_eval
    from downcycle.recipe import AnalyzeConfig, CutConfig, EvalConfig, TrainConfig
    from downcycle.training import run_train

    ref = root / "ref"
    shutil.copytree(reference, ref)
    (ref / "README.md").write_text(REFERENCE_README)
    exp = root / "exp"
    (exp / "sweep").mkdir(parents=True)
    kjv = str(Path(__file__).resolve().parent.parent / "examples" / "corpus" / "kjv.jsonl.gz")
    analysis = run_analyze(AnalyzeConfig(model=str(ref), data=kjv, out=exp / "layers", keep="3", strategy="block", samples=4, seq_len=32,
                                         progress=False))
    cut_a = cut(CutConfig(source=str(ref), out=exp / "sweep" / "a", layers="0-2"))
    cut_b = cut(CutConfig(source=str(ref), out=exp / "sweep" / "b", plan=analysis.out / "plan.json"))
    heal = {"data": corpus, "max_steps": 2, "micro_batch": 4, "eval_max_seqs": 8, "lr": 1e-3, "progress": False}
    h1 = run_train(TrainConfig(model=str(cut_a.out), out=exp / "sweep" / "a-healed", method="lora", lora_r=4, **heal))
    h2 = run_train(TrainConfig(model=str(cut_b.out), out=exp / "sweep" / "b-healed", method="full", **heal))
    models = [ref, cut_a.out, cut_b.out, h1.out, h2.out]
    run_eval(EvalConfig(models=[str(m) for m in models], out=exp / "scores", tasks="loss", data=str(corpus), limit=8, window=64,
                        progress=False))
    return exp


_BUILT: list[Path] = []  # one experiment per session, whichever test module asks first


@pytest.fixture(scope="session")
def experiment(tmp_path_factory, real_model, real_corpus):
    """The experiment directory of :func:`build_experiment`, built once per session (import this
    fixture into a test module to use it; each importing module gets its own fixture definition,
    hence the cache)."""
    if not _BUILT:
        _BUILT.append(build_experiment(tmp_path_factory.mktemp("report"), real_model, real_corpus))
    return _BUILT[0]
