"""--device: one default for every command that loads a model, ``auto``, resolved in one place
(:func:`downcycle.loading.resolve_device`): cuda when a CUDA GPU is available, else cpu."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from downcycle import loading
from downcycle.errors import DowncycleError


@pytest.mark.parametrize("cuda", [True, False])
def test_auto_is_cuda_exactly_when_a_gpu_is_available(cuda, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert loading.resolve_device("auto") == ("cuda" if cuda else "cpu")
    assert loading.resolve_device("cpu") == "cpu"
    if cuda:
        assert loading.resolve_device("cuda:1") == "cuda:1"
    else:
        with pytest.raises(DowncycleError, match="--device cuda:1: CUDA is not available"):
            loading.resolve_device("cuda:1")


def test_every_command_defaults_to_auto():
    from downcycle.recipe.analyze import AnalyzeConfig
    from downcycle.recipe.data import DataConfig
    from downcycle.recipe.evaluate import EvalConfig
    from downcycle.recipe.generate import GenerateConfig
    from downcycle.recipe.report import ReportConfig
    from downcycle.recipe.train import TrainConfig

    defaults = {cls.__name__: {f.name: f.default for f in dataclasses.fields(cls) if f.name in ("device", "gen_device")}
                for cls in (AnalyzeConfig, DataConfig, EvalConfig, GenerateConfig, ReportConfig, TrainConfig)}
    assert defaults == {name: {"gen_device" if name == "DataConfig" else "device": "auto"} for name in defaults}
