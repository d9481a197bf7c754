"""The one answer path (the chat, the library and the evaluation all use it), and what it returns: the text (its
`str()`), the cited sources, and the model that wrote it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import DocbotError
from ..providers import Provider
from .context import Embed, select_context
from .conversation import Conversation, question_to_ask
from .evidence import Evidence, check_answer
from .guards import GuardReport, guarded
from .injection import without_instructions
from .judge import load_judge
from .policy import AnswerPolicy
from .prompts import NOT_COVERED, build_messages, build_messages_without_context
from .retrieval import Source
from .review import Instead, Retraction, Review, checked_first_unit, declines_only
from .text import split_sentences

__all__ = ["Answer", "StreamingAnswer", "Retraction", "answer_question", "find_blocks", "check_question",
           "MAX_QUESTION_CHARS"]

MAX_QUESTION_CHARS = 4000  # about 1,000 tokens: more would push the context blocks out of a small model's window


@dataclass
class Answer:
    """A finished answer. `covered` is False for a decline: no relevant block (no model was asked), a question
    naming what the domain never mentions, or the model's own "not in the documents"; the text is then
    `NOT_COVERED`. The text may begin with a block sentence instead of the model's own first sentence (see
    `answer_question`). `guard` holds the model's raw text and why the guard stopped it, if it did."""

    text: str
    sources: list[Source] = field(default_factory=list)
    model: str = ""
    covered: bool = True
    guard: GuardReport = field(default_factory=GuardReport)
    evidence: Evidence | None = None  # the cited blocks' sentences behind the answer; None without blocks

    def __str__(self) -> str:
        return self.text


class StreamingAnswer:
    """An answer still being written: iterate it for text pieces as the model writes them; a `Retraction` piece
    withdraws the text shown before it and takes its place (a rule replaced the first sentence). `sources` are
    known from the start, `covered` and `text` (what stands) once it is complete."""

    def __init__(self, pieces: Iterator[str], sources: list[Source], model: str,
                 on_done: Callable[[StreamingAnswer], None] = lambda answer: None, covered: bool = True,
                 guard: GuardReport | None = None) -> None:
        self.sources = sources
        self.model = model
        self.covered = covered
        self.guard = guard or GuardReport()
        self.evidence: Evidence | None = None
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
                if isinstance(piece, Retraction):
                    parts.clear()
                parts.append(piece)
                yield piece
        finally:
            self.text = "".join(parts)
        self._on_done(self)  # only a complete answer joins the conversation

    def close(self) -> None:
        """Stop generating (the REPL calls this on Ctrl-C)."""
        close = getattr(self._pieces, "close", None)
        if close:
            close()

    def finished(self) -> Answer:
        """The complete answer (generated now if it was not iterated yet)."""
        for _ in self:
            pass
        return Answer(self.text.strip(), self.sources, self.model, self.covered, self.guard, self.evidence)

    def __str__(self) -> str:
        return self.finished().text


def answer_question(question: str, *, search: Callable[[str], list[Source]] | None,
                    unknown_terms: Callable[[str], list[str]], model: Callable[[], Provider],
                    conversation: Conversation, relevance_threshold: float, max_new_tokens: int, domain: str,
                    embed: Embed, context_chars: int = 0, stream: bool = False,
                    judge: str = "", judge_threshold: float = 0.5,
                    policy: AnswerPolicy = AnswerPolicy()) -> Answer | StreamingAnswer:
    """Answer `question` from the domain, or decline with `NOT_COVERED`, in stages: resolve the question against
    the conversation (`Conversation.readings`), retrieve and judge the blocks (`find_blocks`), decline unasked
    when none is relevant or the question names what the domain never mentions (`policy.unknown_terms`), select
    the context (less any sentence that gives the assistant orders, `injection`; then `context.select_context`:
    only the blocks left are cited), prompt (`prompts.build_messages`,
    after the exchange a follow-up leans on), stream through the loop guards (`guards.guarded`), and review the
    first unit as it is shown (`review.Review`, the rules of `policy`; a `judge`'s blocks keep only the model's
    own decline). With `search` None (retrieval off) the model answers from its weights alone.
    """
    question = check_question(question)
    readings = conversation.readings(question, embed)
    earlier = conversation.exchange_before(question)
    declined = NOT_COVERED.format(domain=domain)
    if search is None:
        return _streamed(readings[0], build_messages_without_context(readings[0]), [], [], model(), max_new_tokens,
                         None, conversation, declined, stream)
    standalone, relevant = find_blocks(readings, search, relevance_threshold, embed, policy.sentence_relevance,
                                       judge, judge_threshold)
    if not relevant or not judge and policy.unknown_terms and unknown_terms(question):
        # it joins the conversation all the same, so a follow-up leans on it, not on the answered turn before it,
        # and as typed: a reading the documents refused keeps no subject
        answer = StreamingAnswer(iter([declined]), [], "", covered=False,
                                 on_done=lambda a: conversation.add(question, a.text))
        return answer if stream else answer.finished()
    asked, selected_by = question_to_ask(question, standalone)
    blocks = select_context(selected_by, [(label, without_instructions(text)) for label, text in
                                          (s.block for s in relevant)], context_chars, embed)
    kept = {label for label, _ in blocks}
    relevant = [s for s in relevant if s.block[0] in kept]
    review = declines_only(declined) if judge else Review((asked, standalone), blocks, policy, embed, declined)
    return _streamed(standalone, build_messages(asked, blocks, earlier), relevant, blocks, model(), max_new_tokens,
                     review, conversation, declined, stream)


def find_blocks(readings: list[str], search: Callable[[str], list[Source]], threshold: float, embed: Embed,
                sentence_threshold: float | None, judge: str = "", judge_threshold: float = 0.5,
                ) -> tuple[str, list[Source]]:
    """The reading to answer and its relevant blocks, in order ([] when no reading has one). Without a judge: the
    first reading that a whole block speaks to (at `threshold`), else the first that one block's sentence speaks
    to (at `sentence_threshold`). With a `judge` (the folder of a learned judge) the first reading with a block
    it scores at `judge_threshold`, its blocks in the judge's order."""
    if judge:
        scorer = load_judge(judge)
        for reading in readings:
            found = search(reading)
            scores = scorer.score(reading, [s.text for s in found])
            relevant = [found[i] for i in np.argsort(-scores, kind="stable") if scores[i] >= judge_threshold]
            if relevant:
                return reading, relevant
        return readings[0], []
    searched: list[tuple[str, list[Source]]] = []
    for reading in readings:
        found = search(reading)
        if any(s.score >= threshold for s in found):
            searched = [(reading, found)]
            break
        searched.append((reading, found))
    for reading, found in searched:
        relevant = _relevant(reading, found, threshold, sentence_threshold, embed)
        if relevant:
            return reading, relevant
    return readings[0], []


def _streamed(standalone: str, messages: list[dict], relevant: list[Source], blocks: list[tuple[str, str]],
              provider: Provider, max_new_tokens: int, review: Callable[[str], Instead | None] | None,
              conversation: Conversation, declined: str, stream: bool) -> Answer | StreamingAnswer:
    """The model's answer to `messages`, guarded and reviewed; once complete it gets its evidence and joins the
    conversation (a chain of follow-ups keeps its subject; an answer from blocks keeps its prompt)."""
    guard = GuardReport()

    def done(answer: StreamingAnswer) -> None:
        if answer.text == declined:
            answer.covered, answer.sources = False, []
        elif relevant:
            answer.evidence = check_answer(answer.text, blocks)
        conversation.add(standalone, answer.text.strip(), answer.sources,
                         messages[-1]["content"] if answer.covered and relevant else None)

    pieces = guarded(provider.stream(messages, max_new_tokens), guard)
    if review is not None:
        pieces = checked_first_unit(pieces, review, guard)
    answer = StreamingAnswer(pieces, relevant, str(provider), on_done=done, guard=guard)
    return answer if stream else answer.finished()


def _relevant(query: str, found: list[Source], threshold: float, sentence_threshold: float | None,
              embed: Embed) -> list[Source]:
    """The found blocks that reach `threshold`, or hold a sentence at `sentence_threshold` (None: none does), in
    their order."""
    below = [s for s in found if s.score < threshold] if sentence_threshold is not None else []
    sentences = [(s.chunk_id, text) for s in below for text in split_sentences(s.text)]
    near = set()
    if sentences:
        vectors = embed([query] + [text for _, text in sentences])
        near = {chunk for (chunk, _), similarity in zip(sentences, vectors[1:] @ vectors[0])
                if similarity >= sentence_threshold}
    return [s for s in found if s.score >= threshold or s.chunk_id in near]


def check_question(question: str) -> str:
    """The question with its whitespace collapsed; an empty or overlong one is refused with what to do."""
    question = re.sub(r"\s+", " ", question or "").strip()
    if not question:
        raise DocbotError("the question is empty; type a question about the documents")
    if len(question) > MAX_QUESTION_CHARS:
        raise DocbotError(f"the question is {len(question):,} characters long; ask in at most "
                          f"{MAX_QUESTION_CHARS:,} characters")
    return question
