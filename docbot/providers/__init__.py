"""Model providers behind one small interface (`Provider.stream` / `Provider.generate`)."""

from .base import Messages, Provider
from .ollama import OllamaProvider, ollama_serves
from .transformers_local import TransformersProvider

__all__ = ["Messages", "Provider", "OllamaProvider", "TransformersProvider", "ollama_serves"]
