"""``downcycle convert``: .bin pickles to safetensors with weights_only=True, then cut as usual."""

from __future__ import annotations

import pickle
import shutil

import torch
from transformers import AutoModelForCausalLM

from downcycle import cli


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_convert_then_cut(tiny_model, tmp_path, capsys):
    src = tiny_model("llama")
    model = AutoModelForCausalLM.from_pretrained(src).eval()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(src / "config.json", legacy / "config.json")
    torch.save(model.state_dict(), legacy / "pytorch_model.bin")

    assert cli.main(["cut", str(legacy), str(tmp_path / "x"), "--layers", "0-3"]) == 1
    assert "downcycle convert" in capsys.readouterr().err

    assert cli.main(["convert", str(legacy), str(tmp_path / "st")]) == 0
    assert cli.main(["cut", str(tmp_path / "st"), str(tmp_path / "cut"), "--layers", "0-5"]) == 0
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "cut")(ids).logits, model(ids).logits)


def test_convert_refuses_unsafe_pickle(tmp_path, capsys):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text("{}")
    with open(legacy / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    assert cli.main(["convert", str(legacy), str(tmp_path / "st")]) == 1
    captured = capsys.readouterr()
    assert "this must never run" not in captured.out
    assert "weights_only=True" in captured.err and "pytorch_model.bin" in captured.err
    assert not (tmp_path / "st").exists()
