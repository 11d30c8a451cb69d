"""Selection strategies on hand-made scores, the --keep grammar, metric/strategy compatibility and
the registries behind ``downcycle ls``."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from downcycle.analysis.analyze import check_metric
from downcycle.analysis.metrics import METRICS
from downcycle.analysis.nll import GreedyRemoval
from downcycle.analysis.strategies import STRATEGIES, get_strategy, resolve_keep
from downcycle.errors import DowncycleError
from downcycle.registries import REGISTRIES, list_registries


def select(name, num, keep, scores=None):
    return get_strategy(name).select(num, keep, scores)


def pair_scores(num, low: dict[tuple[int, int], float], default=0.5):
    """A pair-metric matrix ``[l][n-1]`` with every valid block at ``default`` except ``low``."""
    return [[low.get((l, n), default) if l + n <= num else None for n in range(1, num + 1)] for l in range(num)]


@pytest.mark.parametrize("keep, expected", [("24", 24), (24, 24), ("0.75", 24), ("0.5", 16), ("1", 1), ("32", 32), ("1.0", 32)])
def test_resolve_keep(keep, expected):
    assert resolve_keep(keep, 32) == expected


@pytest.mark.parametrize("keep", ["0", "33", "-1", "1.5", "0.0", "abc", ""])
def test_resolve_keep_rejects(keep):
    with pytest.raises(DowncycleError, match="--keep"):
        resolve_keep(keep, 32)


def test_score_free_strategies():
    assert select("first", 32, 24) == list(range(24))
    assert select("first-last", 32, 24) == list(range(12)) + list(range(20, 32))
    assert select("first-last", 8, 5) == [0, 1, 2, 6, 7]
    uniform = select("uniform", 32, 24)
    assert len(uniform) == 24 and uniform[0] == 0 and uniform[-1] == 31
    assert max(b - a for a, b in itertools.pairwise(uniform)) == 2
    assert select("uniform", 8, 1) == [0]


def test_block_drops_the_closest_block_but_keeps_the_final_layer():
    # the smallest distance of all is the block ending at the output (l + n = L): Gromov et al. keep
    # the final layer, so the runner-up, l = 3, is dropped
    scores = pair_scores(8, {(5, 3): 0.01, (3, 3): 0.05, (0, 3): 0.2})
    assert select("block", 8, 5, scores) == [0, 1, 2, 6, 7]
    assert select("block", 8, 8, scores) == list(range(8))
    # block size follows keep: n = 2 reads column n = 2
    assert select("block", 8, 6, pair_scores(8, {(1, 2): 0.0})) == [0, 3, 4, 5, 6, 7]


def test_bi_drops_lowest_scores_and_reads_pair_metrics_at_n_1():
    bi = [0.9, 0.1, 0.5, 0.05, 0.7, 0.3]
    assert select("bi", 6, 4, bi) == [0, 2, 4, 5]
    assert select("bi", 6, 4, pair_scores(6, {(1, 1): 0.0, (4, 1): 0.01})) == [0, 2, 3, 5]
    nll = GreedyRemoval(1.0, [2, 0], [{0: 1.5, 1: 3.0, 2: 1.1, 3: 2.0}, {0: 1.6, 1: 3.2, 3: 2.5}])
    assert select("bi", 4, 2, nll) == [1, 3]  # ranks by the first step: layers 2 and 0 are cheapest


def test_nll_follows_the_greedy_order_not_the_first_step():
    # removing 1 alone is cheapest, but with 1 gone, 3 is cheaper than 0: greedy, not top-k
    search = GreedyRemoval(2.0, [1, 3], [{0: 2.2, 1: 2.1, 2: 2.5, 3: 2.3}, {0: 2.6, 2: 2.9, 3: 2.4}])
    assert select("nll", 4, 2, search) == [0, 2]
    assert select("nll", 4, 3, search) == [0, 2, 3]
    with pytest.raises(DowncycleError, match="removed only 2"):
        select("nll", 4, 1, search)


def test_keeping_every_layer_drops_nothing():
    nothing_searched = GreedyRemoval(1.0)  # the NLL search with k = 0: only the base NLL
    for name, scores in [("block", pair_scores(4, {})), ("bi", [0.1, 0.2, 0.3, 0.4]), ("bi", nothing_searched),
                         ("nll", nothing_searched), ("first", None), ("first-last", None), ("uniform", None)]:
        assert select(name, 4, 4, scores) == [0, 1, 2, 3], name


def test_metric_and_strategy_compatibility():
    assert check_metric(STRATEGIES["block"], None) == "angular-last"
    assert check_metric(STRATEGIES["block"], "angular-mean") == "angular-mean"
    assert check_metric(STRATEGIES["bi"], "nll") == "nll"
    assert check_metric(STRATEGIES["first"], None) is None
    with pytest.raises(DowncycleError, match="needs a pair metric"):
        check_metric(STRATEGIES["block"], "bi")
    with pytest.raises(DowncycleError, match="uses no metric"):
        check_metric(STRATEGIES["uniform"], "bi")
    with pytest.raises(DowncycleError, match="unknown metric 'cosine'"):
        check_metric(STRATEGIES["bi"], "cosine")
    with pytest.raises(DowncycleError, match="unknown strategy 'best'"):
        get_strategy("best")


def test_every_default_metric_is_registered_and_fits():
    for strategy in STRATEGIES.values():
        if strategy.default_metric is not None:
            assert check_metric(strategy, strategy.default_metric) == strategy.default_metric


def test_registries_list_every_entry_with_a_description():
    listing = list_registries()
    assert set(listing) == set(REGISTRIES) >= {"metrics", "strategies"}
    assert list(listing["metrics"]) == list(METRICS)
    assert list(listing["strategies"]) == list(STRATEGIES) == ["first", "first-last", "uniform", "block", "bi", "nll"]
    assert all(text for entries in listing.values() for text in entries.values())
    with pytest.raises(DowncycleError, match="unknown registry"):
        list_registries("losses-that-do-not-exist")


def test_ls_cli_lists_without_importing_torch():
    code = ("import sys\nfrom downcycle.cli import main\nassert main(['ls']) == 0\nassert main(['ls', 'strategies']) == 0\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[-1] == "False"
    assert "metrics:" in lines and lines.count("strategies:") == 2
    assert any(line.split()[:1] == ["angular-last"] for line in lines)
    bad = subprocess.run([sys.executable, "-m", "downcycle", "ls", "nope"], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("downcycle: error: unknown registry 'nope'")


def test_analyze_help_does_not_import_torch():
    code = ("import sys, contextlib, io\nfrom downcycle.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['analyze', '--help'])\n"
            "    except SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
