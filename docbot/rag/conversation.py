"""A conversation: the turns of one chat, and how a new question is searched in their light."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .retrieval import Source

__all__ = ["Conversation", "Turn", "leans_on_previous", "names_its_subject"]

# A question leans on the previous turn when it opens like a continuation ("And how often?", "What about
# children?"), or is short and points back ("What must they wear there?"), or names almost nothing ("On which days?").
# A brief question that names its own subject ("How long are children's records kept?") stands alone.
_CONTINUES = re.compile(r"^(and|but|also|or|so|then|what about|how about|same)\b", re.I)
_POINTS_BACK = re.compile(r"\b(it|its|they|them|their|this|that|these|those|there|he|she|him|his|her)\b", re.I)
_FILLER = {"what", "which", "who", "whom", "when", "where", "why", "how", "many", "much", "long", "often", "is",
           "are", "was", "were", "do", "does", "did", "can", "must", "should", "the", "a", "an", "of", "on", "in",
           "at", "for", "to", "and", "or", "about", "with", "by", "i", "we", "you", "take", "last", "get", "need",
           "use", "happen", "mean", "cost", "have", "has", "go", "come", "say"}  # words that name no subject
SHORT_QUESTION_WORDS = 10  # pointing back counts only in a question this short; longer ones carry their subject


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

    def resolve(self, question: str) -> str:
        """The question as it stands alone: a follow-up gets the previous question in front of it (for the search
        and for the prompt), any other question is itself."""
        if self._turns and leans_on_previous(question):
            return f"{self._turns[-1].question} {question}"
        return question

    def __len__(self) -> int:
        return len(self._turns)


def names_its_subject(question: str) -> bool:
    """Whether `question` names at least two things of its own ("and how often must passwords be changed?"): such
    a follow-up is searched with the turn before but asked on its own, or the model answers the earlier one."""
    return sum(w not in _FILLER for w in re.findall(r"[\w'-]+", question.lower())) >= 2


def leans_on_previous(question: str) -> bool:
    """Whether `question` can only be understood with the turn before it."""
    words = re.findall(r"[\w'-]+", question.lower())
    if _CONTINUES.match(question.strip()):
        return True
    if len(words) <= SHORT_QUESTION_WORDS and _POINTS_BACK.search(question):
        return True
    return not names_its_subject(question)
