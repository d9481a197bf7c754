"""docbot: answer questions from your own documents with cited sources, then fine-tune and measure."""

from .answers import Answer, StreamingAnswer
from .bot import ConfigurableDocBot
from .config import Config, load_config
from .errors import (ConfigError, DocbotError, DocumentError, IndexBusyError, IndexMismatchError, ModelNotFoundError,
                     ProviderError, StoreError)
from .retrieval import Source

__all__ = [
    "Answer", "StreamingAnswer", "ConfigurableDocBot", "Config", "load_config", "Source",
    "DocbotError", "ConfigError", "DocumentError", "IndexMismatchError", "ModelNotFoundError", "ProviderError",
    "StoreError", "IndexBusyError",
]
