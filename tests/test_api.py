"""The Python API: one function per command, named as it, taking its typed config or the config's fields;
it runs what the command runs, prints nothing, and raises the CLI's one-line errors."""

from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path

import pytest

import downcycle
from downcycle.commands import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "examples" / "reference"


def test_every_command_has_its_function_typed_with_its_config():
    missing = [name for name in COMMANDS if name != "ls" and not callable(getattr(downcycle, name, None))]
    assert not missing, f"commands without an API function: {missing}"
    for name, command in COMMANDS.items():
        if name == "ls":
            continue
        fn = getattr(downcycle, name)
        first = next(iter(inspect.signature(fn).parameters.values()))
        hint = typing.get_type_hints(fn)[first.name]
        assert command.config in typing.get_args(hint), (name, hint)
        assert getattr(downcycle, command.config.__name__) is command.config  # its config is exported beside it
    assert not set(downcycle.__all__) - set(dir(downcycle))


def test_functions_stay_functions_after_the_stage_packages_are_imported():
    """No subpackage shares a command's name: importing one would replace the function on the package."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(downcycle.__path__):
        if info.name != "__main__":  # (it runs the CLI)
            importlib.import_module(f"downcycle.{info.name}")
    for name in (n for n in COMMANDS if n != "ls"):
        assert inspect.isfunction(getattr(downcycle, name)), f"downcycle.{name} is {getattr(downcycle, name)!r}"


def test_cut_by_keywords_or_config_writes_what_the_command_writes(tmp_path, capsys):
    from downcycle.cli import main

    by_kw = downcycle.cut(source=str(REFERENCE), out=tmp_path / "kw", layers="0-3,8")
    config = downcycle.CutConfig(source=str(REFERENCE), out=tmp_path / "cfg", layers="0-3,8")
    by_cfg = downcycle.cut(config)
    replaced = downcycle.cut(config, out=tmp_path / "replaced")
    assert capsys.readouterr().out == ""  # a result, not a summary
    assert by_kw.kept_layers == by_cfg.kept_layers == replaced.kept_layers == [0, 1, 2, 3, 8]
    assert main(["cut", str(REFERENCE), str(tmp_path / "cli"), "--layers", "0-3,8"]) == 0
    for out in ("kw", "cfg", "replaced"):
        assert (tmp_path / out / "model.safetensors").read_bytes() == (tmp_path / "cli" / "model.safetensors").read_bytes()
    assert json.loads((tmp_path / "kw" / "config.json").read_text())["num_hidden_layers"] == 5


def test_eval_and_generate_return_results_and_print_nothing(tmp_path, capsys):
    text = tmp_path / "held-out.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 20)
    outcome = downcycle.eval(models=[str(REFERENCE)], out=tmp_path / "eval", tasks="loss", data=str(text), window=64, progress=False)
    results = json.loads((tmp_path / "eval" / REFERENCE.name / "results.json").read_text())
    assert outcome is not None and results["tasks"]["loss"]["metrics"]["nll"]["value"] > 0
    gen = downcycle.generate(model=str(REFERENCE), prompt="In the beginning", max_new_tokens=5, temperature=0.0)
    assert isinstance(gen.text, str) and 0 < len(gen.tokens) <= 5
    assert capsys.readouterr().out == ""


def test_mistakes_raise_the_one_line_error_or_a_type_error(tmp_path):
    with pytest.raises(downcycle.DowncycleError, match="layers"):
        downcycle.cut(source=str(REFERENCE), out=tmp_path / "x", layers="0-99")
    with pytest.raises(TypeError, match="expected a CutConfig"):
        downcycle.cut(downcycle.HealConfig(model=str(REFERENCE), out=tmp_path / "y", method="linear", data="d.txt"))
