"""Size against quality for scripts/depth_vs_width.sh: reads OUT/eval/*/results.json and the per-item
samples beside them, writes OUT/size_quality.md (every model: parameters, held-out loss, each task
+- stderr, the pooled score of the eight tasks other than BoolQ; paired differences between the
axes at equal size, before and after distillation) and OUT/size_quality.png (parameters against the
pooled score and against held-out loss, one line per axis, healed and not).

Usage: python scripts/size_quality.py OUT
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from downcycle.evaluation.metrics import mean_stat
from downcycle.evaluation.results import read_results
from downcycle.reporting.paired import paired_diff, read_items

TASKS = [("hellaswag", "acc_norm"), ("arc_easy", "acc_norm"), ("arc_challenge", "acc_norm"), ("piqa", "acc_norm"),
         ("winogrande", "acc"), ("openbookqa", "acc_norm"), ("boolq", "acc"), ("sciq", "acc_norm"), ("mmlu", "acc")]
POOLED = [t for t in TASKS if t[0] != "boolq"]  # BoolQ measures a yes/no bias here (README, "Result")
NAME = re.compile(r"^(depth|width|both)(\d+)(-distill)?$")


def items(directory: Path, results, tasks) -> dict:
    """(task, item key) -> 0/1 score, pooled over ``tasks`` (MMLU: its subjects)."""
    out = {}
    for task, metric in tasks:
        subs = [k for k, t in results.tasks.items() if k.startswith(f"{task}_") and not t.subtasks] if task == "mmlu" else None
        for key, (value, _) in (read_items(directory / "samples", task, metric, subs) or {}).items():
            out[(task, key)] = value
    return out


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    stat = mean_stat(values)  # the harness's standard error, as every score in results.json
    return stat.value, stat.stderr


def main(out: Path) -> None:
    models = {}
    for path in sorted((out / "eval").glob("*/results.json")):
        r = read_results(path)
        m = NAME.match(path.parent.name)
        axis, size, healed = (m[1], int(m[2]), bool(m[3])) if m else ("reference", 135, False)
        pooled = items(path.parent, r, POOLED)
        models[path.parent.name] = dict(r=r, dir=path.parent, axis=axis, size=size, healed=healed, pooled=pooled,
                                        score=_mean_se(list(pooled.values())), loss=r.tasks["loss"].metrics["nll"].value,
                                        params=r.model.parameters)
    lines = ["| model | axis | healed | parameters | val loss | " + " | ".join(t for t, _ in TASKS) + " | 8 tasks pooled |",
             "|" + "---|" * (6 + len(TASKS))]
    for name, m in sorted(models.items(), key=lambda kv: (-kv[1]["size"], kv[1]["healed"], kv[0])):
        cells = [f"{m['r'].tasks[t].metrics[k].value:.2f} ± {m['r'].tasks[t].metrics[k].stderr:.2f}" for t, k in TASKS]
        lines.append(f"| {name} | {m['axis']} | {'distill' if m['healed'] else '–'} | {m['params'] / 1e6:.1f}M | {m['loss']:.3f} | "
                     + " | ".join(cells) + f" | {m['score'][0]:.3f} ± {m['score'][1]:.3f} |")
    lines += ["", "Paired differences on the same pooled items (mean per-item difference ± paired SE):", "",
              "| size | healed | comparison | items | difference | beyond 2 SE | val loss difference |", "|---|---|---|---|---|---|---|"]
    for size in sorted({m["size"] for m in models.values() if m["axis"] != "reference"}, reverse=True):
        for healed in (False, True):
            suffix = "-distill" if healed else ""
            for a, b in (("width", "depth"), ("both", "depth"), ("both", "width")):
                ma, mb = models.get(f"{a}{size}{suffix}"), models.get(f"{b}{size}{suffix}")
                if not ma or not mb:
                    continue
                keys = sorted(set(ma["pooled"]) & set(mb["pooled"]), key=str)
                d, se = paired_diff([ma["pooled"][k] for k in keys], [mb["pooled"][k] for k in keys])
                lines.append(f"| ~{size}M | {'distill' if healed else 'no'} | {a} − {b} | {len(keys)} | {d:+.3f} ± {se:.3f} | "
                             f"{'yes' if se and abs(d) > 2 * se else 'no'} | {ma['loss'] - mb['loss']:+.3f} |")
    (out / "size_quality.md").write_text("\n".join(lines) + "\n")
    plot(out, models)
    print("\n".join(lines))


def plot(out: Path, models: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"depth": "tab:blue", "width": "tab:orange", "both": "tab:green"}
    for ax, key, label in ((axes[0], "score", "8 tasks pooled (acc / acc_norm), ± 1 SE"), (axes[1], "loss", "held-out loss (nats/token)")):
        for axis, color in colors.items():
            for healed in (False, True):
                pts = sorted((m["params"], m[key]) for m in models.values() if m["axis"] == axis and m["healed"] == healed)
                if not pts:
                    continue
                xs = [p / 1e6 for p, _ in pts]
                ys = [v[0] if key == "score" else v for _, v in pts]
                err = [v[1] for _, v in pts] if key == "score" else None
                ax.errorbar(xs, ys, yerr=err, marker="o", color=color, capsize=3, linestyle="-" if healed else "--",
                            label=f"{axis}" + (" + distill" if healed else " (not healed)"))
        ref = next((m for m in models.values() if m["axis"] == "reference"), None)
        if ref:
            ax.plot([ref["params"] / 1e6], [ref[key][0] if key == "score" else ref[key]], marker="*", markersize=14,
                    color="black", linestyle="none", label="reference")
        ax.set_xlabel("parameters (millions)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("size vs benchmark score (30 items a task)")
    axes[1].set_title("size vs held-out loss")
    fig.tight_layout()
    fig.savefig(out / "size_quality.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
