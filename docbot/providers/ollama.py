"""The Ollama provider: the official `ollama` client against a server (OLLAMA_HOST, default localhost:11434)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ModelNotFoundError, ProviderError
from .base import Messages, Provider

__all__ = ["OllamaProvider", "ollama_serves", "server_url", "translated_errors"]


class OllamaProvider(Provider):
    """Streams chat answers from an Ollama server with greedy decoding (temperature 0, fixed seed)."""

    name = "ollama"

    def __init__(self, model: str, host: str | None = None, timeout: float = 300.0) -> None:
        import ollama

        self.model = model
        self.host = server_url(host)
        self.client = ollama.Client(host=self.host, timeout=timeout)
        if not self.has_model(model):
            raise ModelNotFoundError(f"model {model!r} is not on the Ollama server at {self.host}; "
                                     f"run `ollama pull {model}` there, or choose another with `model`")

    def has_model(self, model: str) -> bool:
        """Whether the server lists `model` (a name without a tag means ':latest')."""
        wanted = _with_tag(model)
        return any(_with_tag(m.model or "") == wanted for m in self._call(self.client.list).models)

    def stream(self, messages: Messages, max_new_tokens: int) -> Iterator[str]:
        pieces = self._call(self.client.chat, model=self.model, messages=messages, stream=True,
                            options={"temperature": 0, "seed": 0, "num_predict": max_new_tokens})
        with translated_errors(self.host, self.model):
            for part in pieces:
                if part.message.content:
                    yield part.message.content

    def _call(self, fn, **kwargs):
        with translated_errors(self.host, kwargs.get("model", self.model)):
            return fn(**kwargs)


def ollama_serves(model: str, host: str | None = None) -> bool:
    """True when a server answers quickly at `host` and has `model`; used by provider="auto"."""
    try:
        OllamaProvider(model, host=host, timeout=2.0)
    except ProviderError:
        return False
    return True


def server_url(host: str | None) -> str:
    """The server's URL as messages name it: `host`, else $OLLAMA_HOST, else Ollama's default address."""
    host = (host or os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434").rstrip("/")
    return host if "://" in host else f"http://{host}"


def _with_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@contextmanager
def translated_errors(host: str, model: str) -> Iterator[None]:
    """Turn the client's exceptions into docbot errors that say what to do."""
    import httpx
    import ollama

    try:
        yield
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise ModelNotFoundError(f"model {model!r} is not on the Ollama server at {host}; "
                                     f"run `ollama pull {model}` there") from exc
        raise ProviderError(f"the Ollama server at {host} answered an error: {exc.error}") from exc
    except httpx.TimeoutException as exc:
        raise ProviderError(f"the Ollama server at {host} did not answer in time; it may still be loading "
                            f"{model!r}: try again, or raise the timeout") from exc
    except (ConnectionError, httpx.HTTPError) as exc:
        raise ProviderError(f"cannot reach an Ollama server at {host}; start it with `ollama serve` "
                            f"(or set OLLAMA_HOST), or use provider='transformers'") from exc
    except ValueError as exc:  # bad JSON or an unexpected shape: something other than Ollama answers there
        raise ProviderError(f"the server at {host} does not answer like an Ollama server ({exc.__class__.__name__}); "
                            f"check OLLAMA_HOST, or use provider='transformers'") from exc
