"""Long-term memory: embedders, redaction, and the store (write pipeline, hybrid recall)."""

from activities.memory.embedders import (
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    HashingEmbedder,
    LocalMiniLMEmbedder,
    OpenAIEmbedder,
    make_embedder,
)
from activities.memory.redact import Redaction, redact
from activities.memory.store import AddResult, MemoryRecord, MemoryStore, Recalled, RecallMode

__all__ = [
    "AddResult",
    "Embedder",
    "EmbedderUnavailable",
    "EmbeddingError",
    "HashingEmbedder",
    "LocalMiniLMEmbedder",
    "MemoryRecord",
    "MemoryStore",
    "OpenAIEmbedder",
    "RecallMode",
    "Recalled",
    "Redaction",
    "make_embedder",
    "redact",
]
