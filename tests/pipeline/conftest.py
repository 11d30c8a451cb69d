"""Fixtures of the recipe tests: the tiny reference every recipe here starts from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def reference(tiny_model):
    """A 4-layer tiny Llama with the shipped tokenizer beside it."""
    path = tiny_model("llama", vocab_size=8192, num_hidden_layers=4)
    for f in (EXAMPLES / "tokenizer").iterdir():
        shutil.copy2(f, path / f.name)
    return path
