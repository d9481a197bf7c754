"""Model providers behind one small interface (`Provider.stream` / `Provider.generate`), and their one registry.

`PROVIDERS` is the only list of provider names: the config, the chatbot's `model` command and its `--provider`
option all read it. `open_provider` turns a choice into a loaded model. Packaged offline models
(`base_models`) sit beside the providers that run them. This layer imports only `docbot.errors` and
`docbot.files`; nothing here knows about documents, indexes or fine-tuning.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Messages, Provider
from .base_models import PACKAGED_MODELS, packaged_gguf, resolve_base_model, resolve_gguf
from .llamacpp import LlamaCppProvider
from .ollama import OllamaProvider, ollama_serves
from .transformers_local import TransformersProvider

__all__ = ["Messages", "Provider", "LlamaCppProvider", "OllamaProvider", "TransformersProvider", "ollama_serves",
           "PROVIDERS", "PROVIDER_CHOICES", "PACKAGED_MODELS", "open_provider", "packaged_gguf",
           "resolve_base_model", "resolve_gguf"]

PROVIDERS = ("llamacpp", "transformers", "ollama")  # every runtime docbot can answer with
PROVIDER_CHOICES = ("auto", *PROVIDERS)  # "auto": the best one that is available here


def open_provider(kind: str, model: str | None, *, answer_model: str, ollama_model: str, models_dir: str,
                  n_threads: int = 0, lora: str = "") -> Provider:
    """The provider `kind` with `model` (default: `answer_model` in process, `ollama_model` on a server), and
    `lora`, a GGUF LoRA adapter that llama.cpp applies over it ("" = none; "auto" then picks llama.cpp).

    "llamacpp" takes a packaged model name or a .gguf file; "transformers" a packaged model, a folder or a hub id.
    "auto" prefers an Ollama server that has the model, then llama.cpp (a packaged model or a .gguf file), then
    transformers (a model folder or hub id).
    """
    if kind == "auto":
        if model is None and not lora and ollama_serves(ollama_model):
            kind = "ollama"
        elif model is not None and Path(model).is_dir():
            kind = "transformers"
        elif model is None or model in PACKAGED_MODELS or model.lower().endswith(".gguf"):
            kind = "llamacpp"
        else:
            kind = "ollama" if ollama_serves(model) else "transformers"
    if lora and kind != "llamacpp":
        raise ConfigError(f"answer_lora {lora} is a GGUF LoRA, which only llama.cpp applies: use provider "
                          f"llamacpp (or auto), or clear answer_lora")
    if kind == "ollama":
        return OllamaProvider(model or ollama_model)
    name = model or answer_model
    if kind == "llamacpp":
        return LlamaCppProvider(str(resolve_gguf(name, models_dir)), label=name, n_threads=n_threads or None,
                                lora=lora or None)
    return TransformersProvider(resolve_base_model(name, models_dir), label=name)
