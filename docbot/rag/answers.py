"""The one answer path (the chat, the library and the evaluation all use it), and what it returns: the text (its
`str()`), the cited sources, and the model that wrote it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import DocbotError
from ..providers import Provider
from .conversation import Conversation
from .guards import until_repeat
from .prompts import NOT_COVERED, build_messages, build_messages_without_context
from .retrieval import Source

__all__ = ["Answer", "StreamingAnswer", "answer_question", "check_question", "MAX_QUESTION_CHARS"]

MAX_QUESTION_CHARS = 4000  # about 1,000 tokens: more would push the context blocks out of a small model's window


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


def answer_question(question: str, *, search: Callable[[str], list[Source]] | None, model: Callable[[], Provider],
                    conversation: Conversation, relevance_threshold: float, max_new_tokens: int, domain: str,
                    stream: bool = False) -> Answer | StreamingAnswer:
    """Answer `question`: search (None: retrieval off, the model answers from its weights), keep the blocks at or
    above the relevance threshold, decline when none is, else prompt the model (loaded only then) and guard its
    stream. A complete answer joins `conversation`."""
    question = check_question(question)
    if search is None:
        relevant: list[Source] = []
        messages = build_messages_without_context(question)
    else:
        relevant = [s for s in search(conversation.search_query(question)) if s.score >= relevance_threshold]
        if not relevant:
            text = NOT_COVERED.format(domain=domain)
            return StreamingAnswer(iter([text]), [], "", covered=False) if stream else Answer(text, [], "", False)
        messages = build_messages(question, [s.block for s in relevant], conversation.history())
    provider = model()
    answer = StreamingAnswer(until_repeat(provider.stream(messages, max_new_tokens)), relevant, str(provider),
                             on_done=lambda text: conversation.add(question, text.strip(), relevant))
    return answer if stream else Answer(str(answer).strip(), relevant, str(provider))


def check_question(question: str) -> str:
    """The question with its whitespace collapsed; an empty or overlong one is refused with what to do."""
    question = re.sub(r"\s+", " ", question or "").strip()
    if not question:
        raise DocbotError("the question is empty; type a question about the documents")
    if len(question) > MAX_QUESTION_CHARS:
        raise DocbotError(f"the question is {len(question):,} characters long; ask in at most "
                          f"{MAX_QUESTION_CHARS:,} characters")
    return question
