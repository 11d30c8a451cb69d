"""`downcycle generate`'s one-line errors (config, run, command line), a seed that makes sampling
reproducible from the command line, and a `--help` that imports no torch."""

from __future__ import annotations

import pytest

from downcycle.cli import main
from downcycle.errors import DowncycleError
from downcycle.generation import run_generate
from downcycle.recipe import GenerateConfig


@pytest.mark.parametrize("kw, message", [
    ({"temperature": -0.1}, "--temperature"), ({"top_p": 0.0}, "--top-p"), ({"top_p": 1.5}, "--top-p"),
    ({"top_k": -1}, "--top-k"), ({"max_new_tokens": 0}, "--max-new-tokens"), ({"repetition_penalty": 0.0}, "--repetition-penalty"),
    ({"chat": "maybe"}, "--chat"), ({"chat": "off", "system": "x"}, "--system"), ({"dtype": "int8"}, "--dtype"),
    ({"prompt": None}, "PROMPT"), ({"prompt_file": "p.txt"}, "not both"),
])
def test_config_errors(kw, message):
    with pytest.raises(DowncycleError, match=message):
        GenerateConfig(**{"model": "m", "prompt": "hi", **kw})


@pytest.mark.parametrize("kw, message", [
    ({"prompt": ""}, "the prompt is empty"), ({"prompt": "  \n"}, "the prompt is empty"),
    ({"chat": "on"}, "no chat template"), ({"system": "be brief"}, "needs a chat template"),
])
def test_run_errors(real_model, kw, message):
    with pytest.raises(DowncycleError, match=message):
        run_generate(GenerateConfig(**{"model": str(real_model), "prompt": "hi", "device": "cpu", **kw}), write=lambda s: None)


def test_cli_errors_are_one_line(tmp_path, real_model, capsys):
    for argv, message in [([str(tmp_path / "missing"), "hi"], "no such model directory"),
                          ([str(real_model), "hi", "--chat", "on"], "no chat template"),
                          ([str(real_model), "hi", "--temperature", "-1"], "--temperature"),
                          ([str(real_model), "hi", "--top-p", "0"], "--top-p"),
                          ([str(real_model), ""], "the prompt is empty"),
                          ([str(real_model), "--prompt-file", str(tmp_path / "none.txt")], "no such prompt file")]:
        assert main(["generate", *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("downcycle: error: ") and message in err and err.count("\n") == 1, err


def test_cli_seed_makes_sampling_reproducible(real_model, capsys):
    argv = ["generate", str(real_model), "Thou shalt", "--max-new-tokens", "16", "--temperature", "1.0", "--top-k", "50"]
    outs = []
    for seed in ("5", "5", "6"):
        assert main([*argv, "--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] != outs[2]


def test_generate_help_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; from downcycle.cli import main\ntry: main(['generate', '--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--max-new-tokens" in out.stdout and out.stdout.strip().endswith("[]")
