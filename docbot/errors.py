"""One error family: every message says what went wrong and what to do next."""

__all__ = [
    "DocbotError",
    "ConfigError",
    "DocumentError",
    "IndexMismatchError",
    "StoreError",
    "IndexBusyError",
    "ProviderError",
    "ModelNotFoundError",
]


class DocbotError(Exception):
    """Base of every error docbot raises on purpose; the REPL prints it as one line."""


class ConfigError(DocbotError):
    """A configuration value is unknown, of the wrong type, or out of range."""


class DocumentError(DocbotError):
    """A document (or a documents folder) cannot be read; the message names the file and the reason."""


class IndexMismatchError(DocbotError):
    """An index was built with a different embedding model than the one asked to open it."""


class StoreError(DocbotError):
    """The index store cannot be used: a shared Chroma server that does not answer or refuses the token."""


class IndexBusyError(StoreError):
    """Another process holds the index's write lease; the message names it (PID, host, since when)."""


class ProviderError(DocbotError):
    """A model provider cannot be reached or fails to answer."""


class ModelNotFoundError(ProviderError):
    """The chosen model is not available from the provider."""
