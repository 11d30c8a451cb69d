"""Configs of `downcycle report` (the experiment report) and `downcycle card` (a model card)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DowncycleError
from .fields import INPUT, arg, device_arg

__all__ = ["DEFAULT_PROMPTS", "CardConfig", "ReportConfig"]

# Short prompts in the register of the shipped corpus (the Bible, Shakespeare, Moby-Dick, speeches).
DEFAULT_PROMPTS = ("In the beginning", "The whale", "To be, or not to be", "The President said that")


@dataclass
class ReportConfig:
    """Write DIR/report.html and DIR/report.md for an experiment directory (a derived view: an existing report is overwritten)."""

    dir: Path = arg("experiment directory: stage subdirectories with downcycle.json manifests (e.g. `downcycle demo`'s output)",
                    positional=True, metavar="DIR", role=INPUT, pipeline=True)
    prompt: list[str] | None = arg("a prompt for the sample generations (repeatable; default: four short prompts)", metavar="TEXT")
    new_tokens: int = arg("new tokens per sample generation (greedy)", 32)
    samples: bool = arg("include sample generations from every model (cached in DIR/report/samples.json)", True)
    regenerate: bool = arg("generate the samples again even when DIR/report/samples.json has them", False)
    cards: bool = arg("refresh the README.md model card of every model in DIR with its evaluation results", True)
    device: str = device_arg("device for the sample generations")

    def __post_init__(self) -> None:
        self.dir = Path(self.dir)
        if not self.prompt:
            self.prompt = list(DEFAULT_PROMPTS)
        if self.new_tokens < 1:
            raise DowncycleError(f"--new-tokens must be at least 1 (got {self.new_tokens})")
        if any(not p.strip() for p in self.prompt):
            raise DowncycleError("--prompt: a prompt is empty")


@dataclass
class CardConfig:
    """Write MODEL_DIR/README.md, a model card, from the directory's downcycle.json manifests (and evaluation results)."""

    model_dir: Path = arg("a model directory written by `downcycle cut` or `downcycle train`", positional=True, metavar="MODEL_DIR",
                          role=INPUT)
    results: Path | None = arg("a results.json written by `downcycle eval` for this model: adds a results table", metavar="RESULTS",
                               role=INPUT)

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        if self.results is not None:
            self.results = Path(self.results)
