"""`downcycle report`: discovery by manifests, the tables' numbers against the results files, the gap
recovered, a self-contained HTML file, cached greedy samples equal to transformers' greedy decoding,
and the page rendered by headless Chromium."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from downcycle.errors import DowncycleError
from downcycle.evaluation.results import read_results
from downcycle.recipe import ReportConfig

pytestmark = pytest.mark.slow
PROMPTS = ["In the beginning", "The whale"]


@pytest.fixture(scope="module")
def report(experiment):
    from downcycle.reporting.build import run_report

    return run_report(ReportConfig(dir=experiment, prompt=PROMPTS, new_tokens=6))


class _Tables(HTMLParser):
    """Rows of cell texts of every <table>, and every <img> src."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: str) -> _Tables:
    p = _Tables()
    p.feed(page)
    return p


def test_discovers_models_by_manifest_not_by_name(experiment):
    from downcycle.reporting.experiment import discover

    (experiment / ".sweep.tmp-1234").mkdir()  # an atomic temporary: never a stage
    (experiment / ".sweep.tmp-1234" / "downcycle.json").write_text('{"stage": "cut"}')
    exp = discover(experiment)
    roles = {m.name: (m.role, m.parent) for m in exp.models}
    assert roles == {"ref": ("reference", None), "sweep/a": ("cut", None), "sweep/b": ("cut", None),
                     "sweep/a-healed": ("healed", "sweep/a"), "sweep/b-healed": ("healed", "sweep/b")}
    assert exp.model("ref").path == (experiment.parent / "ref").resolve()  # outside DIR, found through the cuts
    assert {s.kind for s in exp.stages} >= {"analyze", "cut", "train", "eval"}
    assert all(m.results is not None for m in exp.models)
    assert exp.model("sweep/b").results.model.path.endswith("sweep/b")


def test_tables_hold_the_numbers_of_the_results_files(experiment, report):
    page = report.html.read_text()
    models = _parse(page).tables[0]
    head, rows = models[0], {r[0]: r for r in models[1:]}
    assert set(rows) == {"ref", "sweep/a", "sweep/b", "sweep/a-healed", "sweep/b-healed"}
    md = report.markdown.read_text()
    for name, eval_name in (("ref", "ref"), ("sweep/a", "a"), ("sweep/b", "b"), ("sweep/a-healed", "a-healed"),
                            ("sweep/b-healed", "b-healed")):
        res = read_results(experiment / "scores" / eval_name / "results.json")
        metrics = res.tasks["loss"].metrics
        row = dict(zip(head, rows[name]))
        assert row["val loss (nats/token)"] == f"{metrics['nll'].value:.4f}"
        assert row["perplexity"] == f"{metrics['perplexity'].value:.4f}"
        assert row["bits per byte"] == f"{metrics['bits_per_byte'].value:.4f}"
        assert row["parameters"] == f"{res.model.parameters / 1e6:.2f}M"
        weights = sum(p.stat().st_size for p in Path(res.model.path).glob("*.safetensors"))
        assert row["weights on disk"] == f"{weights / 1e6:.1f} MB"
        md_row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {metrics['nll'].value:.4f} |" in md_row and f"| {metrics['bits_per_byte'].value:.4f} |" in md_row
    assert rows["sweep/a"][2] == "first (layers 0-2)" and rows["sweep/b"][2] == "block"  # how each cut chose
    assert rows["sweep/a-healed"][2] == "first (layers 0-2) / lora" and rows["sweep/b-healed"][2] == "block / full"


def test_gap_recovered_and_winners_known_answer(experiment):
    from downcycle.reporting.experiment import discover
    from downcycle.reporting.summary import summarize

    exp = discover(experiment)
    losses = {"ref": 2.0, "sweep/a": 3.0, "sweep/b": 2.5, "sweep/a-healed": 2.25, "sweep/b-healed": 2.4}
    for m in exp.models:
        m.results.tasks["loss"].metrics["nll"].value = losses[m.name]
    s = summarize(exp)
    healed = {h["model"]: h for h in s.healed}
    assert healed["sweep/a-healed"]["recovered"] == pytest.approx((3.0 - 2.25) / (3.0 - 2.0))  # 0.75
    assert healed["sweep/b-healed"]["recovered"] == pytest.approx((2.5 - 2.4) / (2.5 - 2.0))  # 0.2
    assert healed["sweep/a-healed"]["tokens"] == json.loads((experiment / "sweep" / "a-healed" / "downcycle.json").read_text())["outputs"]["tokens"]
    text = " ".join(s.verdicts)
    assert "Before healing, strategy **block** won" in text  # sweep/b 2.5 < sweep/a 3.0
    assert "**sweep/a-healed** is best: strategy **first (layers 0-2)**, method **lora**" in text and "recovering 75%" in text


def test_html_is_self_contained(report):
    page = report.html.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"https?://", page) and "<script" not in page and "<link" not in page and "url(" not in page
    images = _parse(page).images
    assert len(images) == len(report.figures) >= 5  # heatmap, BI, overlay, two runs
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    md = report.markdown.read_text()
    for name in report.figures:  # the Markdown's pictures, relative to it
        assert f"](report/{name})" in md and (report.markdown.parent / "report" / name).is_file()
    assert (report.markdown.parent / "report" / "downcycle.json").is_file()


def test_samples_are_greedy_cached_and_regenerated_on_change(experiment, report):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from downcycle.reporting.build import run_report

    doc = json.loads((experiment / "report" / "samples.json").read_text())
    assert doc["prompts"] == PROMPTS and doc["new_tokens"] == 6 and set(doc["models"]) == set(report.models)
    path = experiment / "sweep" / "b-healed"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    for prompt, text in zip(PROMPTS, doc["models"]["sweep/b-healed"]["texts"]):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        out = model.generate(ids, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id or 0)
        assert text == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    page = report.html.read_text()
    assert all(html.escape(text) in page for entry in doc["models"].values() for text in entry["texts"])
    again = run_report(ReportConfig(dir=experiment, prompt=PROMPTS, new_tokens=6, cards=False))
    assert again.generated == []  # nothing changed: every sample came from samples.json
    assert json.loads((experiment / "report" / "samples.json").read_text()) == doc
    kept = run_report(ReportConfig(dir=experiment, prompt=PROMPTS, new_tokens=6, cards=False, samples=False))
    assert kept.generated == [] and json.loads((experiment / "report" / "samples.json").read_text()) == doc
    one = run_report(ReportConfig(dir=experiment, prompt=PROMPTS[:1], new_tokens=3, cards=False))
    assert sorted(one.generated) == sorted(report.models)  # other prompts and length: generated again
    again = json.loads((experiment / "report" / "samples.json").read_text())
    assert again["prompts"] == PROMPTS[:1] and all(len(m["texts"]) == 1 for m in again["models"].values())
    (experiment / "report" / "samples.json").write_text(json.dumps(doc))  # leave the cache as the module found it


def test_cards_refreshed_with_results(experiment, report, reference_readme):
    assert sorted(report.cards) == ["sweep/a", "sweep/a-healed", "sweep/b", "sweep/b-healed"]  # not the reference outside DIR
    card = (experiment / "sweep" / "b-healed" / "README.md").read_text()
    nll = read_results(experiment / "scores" / "b-healed" / "results.json").tasks["loss"].metrics["nll"].value
    assert "## Evaluation" in card and f"| loss | nll | {nll:.4f} |" in card
    assert (experiment.parent / "ref" / "README.md").read_text() == reference_readme  # the source's card untouched


def test_errors_and_cli(tmp_path, experiment, report, capsys):
    from downcycle.cli import main
    from downcycle.reporting.build import run_report

    with pytest.raises(DowncycleError, match="no models found"):
        run_report(ReportConfig(dir=tmp_path))
    with pytest.raises(DowncycleError, match="not a directory"):
        run_report(ReportConfig(dir=tmp_path / "missing"))
    with pytest.raises(DowncycleError, match="--new-tokens"):
        ReportConfig(dir=tmp_path, new_tokens=0)
    assert main(["report", str(tmp_path)]) == 1
    assert "downcycle: error:" in capsys.readouterr().err
    assert main(["report", str(experiment), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--new-tokens", "6", "--no-cards"]) == 0
    printed = capsys.readouterr().out
    assert "report.html" in printed and "samples: 0 generated, 5 cached" in printed


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1200,4000",
                    report.html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.is_file()
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 4000)
    low, high = image.getextrema()
    assert high - low > 100  # not blank: dark text and light background
    histogram = image.histogram()
    assert sum(histogram[:128]) > 0.005 * 1200 * 4000  # a real amount of dark ink (text, tables, plots)


def test_analysis_plots_redrawn_from_scores_when_missing(experiment, tmp_path):
    from downcycle.reporting.experiment import Experiment, Stage
    from downcycle.reporting.figures import analysis_figures

    copy = tmp_path / "no-plots"
    shutil.copytree(experiment / "layers", copy)
    for png in copy.glob("*.png"):
        png.unlink()
    out = tmp_path / "out"
    out.mkdir()
    manifest = json.loads((copy / "downcycle.json").read_text())
    figures = analysis_figures(Experiment(tmp_path, [Stage(copy, "no-plots", manifest)]), out)
    assert [f.file for f in figures] == ["no-plots-angular_distance.png", "no-plots-block_influence.png"]
    for f in figures:
        assert (out / f.file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plan = json.loads((copy / "plan.json").read_text())
    assert f"kept {plan['kept_layers']} of 6 layers by strategy block" in figures[0].caption


def test_a_moved_experiment_is_read_the_same(experiment, tmp_path):
    """Manifests and results record absolute paths; a copied experiment directory still links each
    healed model to its cut and each model to its results (cuts of equal depth share a config.json)."""
    import shutil

    from downcycle.reporting.experiment import discover

    moved = tmp_path / "elsewhere" / experiment.name
    shutil.copytree(experiment, moved, ignore=shutil.ignore_patterns(".sweep.tmp-*"))
    before = {m.name: (m.role, m.parent, m.results.tasks["loss"].metrics["nll"].value) for m in discover(experiment).models}
    after = {m.name: (m.role, m.parent, m.results.tasks["loss"].metrics["nll"].value if m.results else None)
             for m in discover(moved).models}
    assert after == before


def test_distillation_curves_show_the_lm_term_beside_validation_loss():
    from downcycle.reporting.figures import train_series

    records = [{"step": 0, "split": "val", "tokens": 0, "loss": 4.9},
               {"step": 1, "split": "train", "tokens": 4096, "loss": 2.4, "lm_loss": 4.8, "kl": 0.04},
               {"step": 2, "split": "train", "tokens": 8192, "loss": 4.7}]
    assert train_series(records) == [(4096, 4.8), (8192, 4.7)]
