"""Long-term memory: embedders, redaction, and the store (write pipeline, hybrid recall)."""

from vigil.activities.memory.embedders import (
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    HashingEmbedder,
    LocalMiniLMEmbedder,
    OpenAIEmbedder,
)
from vigil.activities.memory.redact import Redaction, redact
from vigil.activities.memory.store import (
    AddResult,
    Forgotten,
    MemoryRecord,
    MemoryStore,
    Recalled,
    RecallMode,
)

__all__ = [
    "AddResult",
    "Embedder",
    "EmbedderUnavailable",
    "EmbeddingError",
    "Forgotten",
    "HashingEmbedder",
    "LocalMiniLMEmbedder",
    "MemoryRecord",
    "MemoryStore",
    "OpenAIEmbedder",
    "RecallMode",
    "Recalled",
    "Redaction",
    "redact",
]
