"""Guards on a model's streamed text, the same for every provider."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["until_repeat"]


def until_repeat(pieces: Iterator[str]) -> Iterator[str]:
    """End a small model's degenerate loop: generation stops once a finished line repeats an earlier one."""
    seen: set[str] = set()
    line = ""
    try:
        for piece in pieces:
            yield piece
            *finished, line = (line + piece).split("\n")
            for text in filter(None, (f.strip() for f in finished)):
                if text in seen:
                    return
                seen.add(text)
    finally:
        getattr(pieces, "close", lambda: None)()
