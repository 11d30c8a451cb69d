"""Configs of `downcycle run` and `downcycle sweep`: a YAML recipe chaining every stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DowncycleError
from .fields import INPUT, arg

__all__ = ["DemoConfig", "RunConfig", "SweepConfig", "STAGE_KINDS"]

# The stage kinds of a pipeline, in the order they run (`--from` takes one of these or a stage's directory name).
STAGE_KINDS = ("data", "analyze", "cut", "heal", "eval", "compare", "sweep", "report")  # recipe sections; directory prefixes


def _check_from(value: str | None) -> None:
    if value is not None and not value.strip():
        raise DowncycleError("--from: empty stage name")


@dataclass
class RunConfig:
    """Run a YAML recipe: data, analyze, cut, heal, eval, compare and report, skipping stages already done."""

    recipe: Path = arg("the recipe YAML (see examples/recipes/)", positional=True, metavar="RECIPE", role=INPUT)
    out: Path | None = arg("output directory, one subdirectory per stage (default: the recipe's `out`; a sweep's gets a "
                           "-sweep suffix)", metavar="DIR", affects_output=False)
    from_stage: str | None = arg(f"re-run from this stage on: a kind ({', '.join(STAGE_KINDS)}) or a stage directory name "
                                 "(e.g. cut-block)", metavar="STAGE", flag="--from")
    dry_run: bool = arg("validate the recipe and print the stages and whether each would run or be skipped, without running them", False)
    progress: bool = arg("show progress bars", True, affects_output=False)

    def __post_init__(self) -> None:
        self.recipe = Path(self.recipe)
        if self.out is not None:
            self.out = Path(self.out)
        _check_from(self.from_stage)


@dataclass
class SweepConfig(RunConfig):
    """Run a recipe at several depths: a family of smaller models and a size-versus-quality curve."""

    depths: str = arg("kept depths, comma-separated: fractions of the reference's layers (0.75) or layer counts (9)",
                      "0.75,0.625,0.5", metavar="D,D,...")

    def __post_init__(self) -> None:
        super().__post_init__()
        values = [d.strip() for d in str(self.depths).split(",") if d.strip()]
        if not values:
            raise DowncycleError("--depths: give at least one depth, e.g. 0.75,0.5")
        for d in values:
            try:
                number = float(d)
            except ValueError:
                raise DowncycleError(f"--depths: {d!r} is neither a fraction (0.75) nor a layer count (9)") from None
            if number <= 0 or (number > 1 and not number.is_integer()):
                raise DowncycleError(f"--depths: {d!r} must be a fraction in (0, 1] or a whole number of layers")
        if len(set(values)) != len(values):
            raise DowncycleError(f"--depths: {self.depths!r} repeats a depth")
        self.depths = ",".join(values)

    @property
    def depth_list(self) -> list[str]:
        return self.depths.split(",")


@dataclass
class DemoConfig:
    """Run the embedded default: the seed's experiment in miniature on the shipped reference model, offline, on a CPU."""

    out: Path = arg("output directory (re-running continues where it stopped; finished stages are skipped)", Path("demo-out"),
                    affects_output=False)
    force: bool = arg("delete the output directory first and run every stage again", False, affects_output=False)
    heal_steps: int | None = arg("override the optimizer steps of each healing run (default: the recipe's; fewer for a quick look)")
    eval_limit: int | None = arg("evaluate on only the first N validation documents (default: all)", metavar="N")
    progress: bool = arg("show progress bars", True, affects_output=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("heal_steps", "eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DowncycleError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
