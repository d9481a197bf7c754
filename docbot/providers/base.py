"""The one interface every model provider implements: stream text pieces for a list of chat messages."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

__all__ = ["Messages", "Provider"]

Messages = list[dict[str, str]]


class Provider(ABC):
    """A chat model. Decoding is greedy, so the same messages give the same answer on every provider."""

    name: str  # one of providers.PROVIDERS: "llamacpp", "transformers" or "ollama"
    model: str  # what the user chose, shown with answers

    @abstractmethod
    def stream(self, messages: Messages, max_new_tokens: int) -> Iterator[str]:
        """Text pieces as they are generated; closing the iterator early stops generation."""

    def generate(self, messages: Messages, max_new_tokens: int) -> str:
        return "".join(self.stream(messages, max_new_tokens))

    follows_schema = False  # whether `generate_json` can hold the reply to a JSON schema (a grammar)

    def generate_json(self, messages: Messages, schema: dict, max_new_tokens: int) -> tuple[str, bool]:
        """A reply held to the JSON `schema`, and whether it is complete (False: cut off by `max_new_tokens`)."""
        raise NotImplementedError(f"{self} cannot hold its replies to a JSON schema")

    def __str__(self) -> str:
        return f"{self.name}:{self.model}"
