"""Errors the chatbot raises for the user to read.

They become a one-line `error: ...` (exit code 2) in the CLI, or a notification in the app,
only at the edge; everything below raises these and never prints.
"""


class ChatbotError(Exception):
    """A problem the user can fix: bad model file, locked database, bad input."""


class ModelLoadError(ChatbotError):
    """The model file is missing, not a GGUF, or llama.cpp cannot load it."""


class StoreError(ChatbotError):
    """The conversation database cannot be opened or written."""


class EngineError(ChatbotError):
    """Generation failed (local engine error, remote server down or answering an error)."""


class KnowledgeBaseError(ChatbotError):
    """The FAQ knowledge base cannot be read."""
