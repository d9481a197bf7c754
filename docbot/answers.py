"""What `ask` returns: the text (its `str()`), the cited sources, and the model that wrote it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .retrieval import Source

__all__ = ["Answer", "StreamingAnswer"]


@dataclass
class Answer:
    """A finished answer. `covered` is False when no retrieved chunk was relevant and no model was asked."""

    text: str
    sources: list[Source] = field(default_factory=list)
    model: str = ""
    covered: bool = True

    def __str__(self) -> str:
        return self.text


class StreamingAnswer:
    """An answer still being written: iterate it for text pieces; `sources` are known from the start."""

    def __init__(self, pieces: Iterator[str], sources: list[Source], model: str,
                 on_done: Callable[[str], None] = lambda text: None, covered: bool = True) -> None:
        self.sources = sources
        self.model = model
        self.covered = covered
        self.text = ""
        self._pieces = pieces
        self._on_done = on_done
        self._started = False

    def __iter__(self) -> Iterator[str]:
        if self._started:  # a second pass replays what the first one received
            yield from [self.text] if self.text else []
            return
        self._started = True
        parts = []
        try:
            for piece in self._pieces:
                parts.append(piece)
                yield piece
        finally:
            self.text = "".join(parts)
        self._on_done(self.text)  # only a complete answer joins the conversation history

    def close(self) -> None:
        """Stop generating (the REPL calls this on Ctrl-C)."""
        close = getattr(self._pieces, "close", None)
        if close:
            close()

    def __str__(self) -> str:
        for _ in self:
            pass
        return self.text
