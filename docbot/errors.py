"""One error family: every message says what went wrong and what to do next."""

__all__ = [
    "DocbotError",
    "ConfigError",
    "DocumentError",
    "IndexMismatchError",
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


class ProviderError(DocbotError):
    """A model provider cannot be reached or fails to answer."""


class ModelNotFoundError(ProviderError):
    """The chosen model is not available from the provider."""
