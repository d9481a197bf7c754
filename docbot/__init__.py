"""docbot: answer questions from your own documents with cited sources, then fine-tune and measure.

How it fits (each layer imports only the ones below it, and only their public names):

    repl.py           the chatbot behind `python rag_chat.py` / `docbot`
    bot.py            ConfigurableDocBot: the thin facade that holds a session's state
    tuning/           answers -> a better model: data, notebook, training, registry, export, evaluation
    rag/              documents -> chunks -> index -> retrieval -> prompt -> answer (with a conversation)
    providers/        the models that write answers (transformers, ollama), one registry of them
    config.py errors.py files.py    settings, the error family, atomic file writes
"""

from .bot import ConfigurableDocBot
from .config import Config, load_config
from .errors import (ConfigError, DocbotError, DocumentError, IndexBusyError, IndexMismatchError, ModelNotFoundError,
                     ProviderError, StoreError)
from .rag.answers import Answer, Retraction, StreamingAnswer
from .rag.conversation import Conversation
from .rag.retrieval import Source

__all__ = [
    "Answer", "StreamingAnswer", "Retraction", "ConfigurableDocBot", "Config", "Conversation", "load_config", "Source",
    "DocbotError", "ConfigError", "DocumentError", "IndexMismatchError", "ModelNotFoundError", "ProviderError",
    "StoreError", "IndexBusyError",
]
