"""A conversation: the turns of one chat, and how a new question is searched in their light."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .retrieval import Source

__all__ = ["Conversation", "Turn"]

FOLLOW_UP_WORDS = 6  # a question this short, asked after another, is searched together with the one before


@dataclass(frozen=True)
class Turn:
    """One question, the answer given, and the sources it cited."""

    question: str
    answer: str
    sources: tuple[Source, ...] = ()


class Conversation:
    """The last `max_turns` turns of one chat. `bot.conversation` is the default one; pass another to `ask` to
    keep several chats apart."""

    def __init__(self, max_turns: int = 2) -> None:
        self._turns: deque[Turn] = deque(maxlen=max_turns)

    @property
    def turns(self) -> list[Turn]:
        """The kept turns, oldest first."""
        return list(self._turns)

    def add(self, question: str, answer: str, sources: Sequence[Source] = ()) -> None:
        """Record a complete answer (an interrupted one never joins the conversation)."""
        self._turns.append(Turn(question, answer, tuple(sources)))

    def clear(self) -> None:
        """Forget every turn: the next question is read on its own."""
        self._turns.clear()

    def search_query(self, question: str) -> str:
        """What to search for: a short question after another is searched together with the previous one."""
        if self._turns and len(question.split()) <= FOLLOW_UP_WORDS:
            return f"{self._turns[-1].question} {question}"
        return question

    def history(self) -> list[tuple[str, str]]:
        """(question, answer) pairs, oldest first, as the prompt builder takes them."""
        return [(t.question, t.answer) for t in self._turns]

    def __len__(self) -> int:
        return len(self._turns)
