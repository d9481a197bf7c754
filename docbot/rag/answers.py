"""The one answer path (the chat, the library and the evaluation all use it), and what it returns: the text (its
`str()`), the cited sources, and the model that wrote it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import DocbotError
from ..providers import Provider
from .context import Embed, nearness, select_context
from .conversation import Conversation, question_to_ask
from .evidence import Evidence, check_answer, says_not_in_sources
from .text import content_stems, split_sentences
from .guards import GuardReport, Instead, checked_first_sentence, guarded
from .judge import load_judge
from .policy import AnswerPolicy
from .prompts import NOT_COVERED, build_messages, build_messages_without_context
from .retrieval import Source

__all__ = ["Answer", "StreamingAnswer", "answer_question", "check_question", "MAX_QUESTION_CHARS"]

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
    """An answer still being written: iterate it for text pieces; `sources` are known from the start, `covered`
    and `text` once it is complete."""

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
    """Answer `question` from the domain, or decline with `NOT_COVERED`.

    A follow-up is read against the conversation first (`Conversation.readings`). With `search` None (retrieval
    off) the model answers the first reading from its weights alone. Otherwise the first reading that finds a
    relevant block (at the relevance threshold, or with a sentence at `sentence_relevance`) is used, and the
    question declines without asking the model when no reading does or when it names something the domain never
    mentions (`unknown_terms`), and the model is told to reply `DECLINE_REPLY` when the blocks lack the answer;
    the blocks are cut to the `context_chars` characters nearest the question (`context.select_context`), and
    only the blocks left are cited. A follow-up is asked after the exchange it leans on, that turn's blocks
    included (`Conversation.exchange_before`). The model's stream goes through the guards, and its first sentence
    is held back until it is complete and reviewed by the rules of `policy` (`policy.AnswerPolicy`, in its field
    order): the model's own decline, a sentence the blocks hardly hold (`decline_below`) or one resting on a block
    sentence that does not speak to the question (`answer_relevance`) becomes the decline sentence, or the block
    sentence that answers the question by itself (`answers_itself`); one copied from a neighbour of the sentence
    that answers becomes that sentence (`swap_margin`), ending the answer; a bare value ("24 hours") becomes the
    block sentence that holds it (`fragment_words`).

    With a `judge` (the folder of a learned judge: the probability that a block answers a question) the judge alone
    decides: the first reading with a block it scores at `judge_threshold` or more is asked, from those blocks in
    its order; no reading with one declines unasked, and of the checks on the first sentence only the model's own
    decline stays.
    """
    question = check_question(question)
    readings = conversation.readings(question, embed)
    earlier = conversation.exchange_before(question)
    standalone = readings[0]
    declined = NOT_COVERED.format(domain=domain)
    if search is None:
        relevant: list[Source] = []
        messages = build_messages_without_context(standalone)
    elif judge:
        relevant, scorer = [], load_judge(judge)
        for standalone in readings:
            found = search(standalone)
            scores = scorer.score(standalone, [s.text for s in found])
            relevant = [found[i] for i in np.argsort(-scores, kind="stable") if scores[i] >= judge_threshold]
            if relevant:
                break
    else:
        # the first reading that a whole block speaks to; else the first that one block's sentence speaks to
        searched: list[tuple[str, list[Source]]] = []
        for reading in readings:
            found = search(reading)
            if any(s.score >= relevance_threshold for s in found):
                searched = [(reading, found)]
                break
            searched.append((reading, found))
        for standalone, found in searched:
            relevant = _relevant(standalone, found, relevance_threshold, policy.sentence_relevance, embed)
            if relevant:
                break
    if search is not None:
        # declined unasked; it joins the conversation all the same, so a follow-up ("What about children?") leans
        # on it, not on the answered turn before it, and as typed: a reading the documents refused keeps no subject
        if not relevant or not judge and policy.unknown_terms and unknown_terms(question):
            answer = StreamingAnswer(iter([declined]), [], "", covered=False,
                                     on_done=lambda a: conversation.add(question, a.text))
            return answer if stream else answer.finished()
        asked, selected_by = question_to_ask(question, standalone)
        blocks = select_context(selected_by, [s.block for s in relevant], context_chars, embed)
        kept_labels = {label for label, _ in blocks}
        relevant = [s for s in relevant if s.block[0] in kept_labels]
        messages = build_messages(asked, blocks, earlier)
    provider = model()
    guard = GuardReport()
    # the guard again on what is shown: a block sentence put in the first one's place is words the model did not
    # write, and with the model's next ones it can complete a loop that the model's own stream does not hold
    shown = GuardReport()

    def done(answer: StreamingAnswer) -> None:
        guard.fired = guard.fired or shown.fired
        if answer.text == declined:
            answer.covered, answer.sources = False, []
        elif relevant:
            answer.evidence = check_answer(answer.text, blocks)
        # a chain of follow-ups keeps its subject; an answer from blocks keeps its prompt for the next follow-up
        conversation.add(standalone, answer.text.strip(), answer.sources,
                         messages[-1]["content"] if answer.covered and relevant else None)

    def review(sentence: str) -> Instead | None:
        """In place of the first sentence: the decline, for the model's own decline or a sentence that speaks of
        what the blocks do not hold (few of its words are in them) or rests on a sentence that does not speak to
        the question, unless a block sentence answers the question by itself (`_self_evident`); the block
        sentence that answers instead of one resting on another (`_answering_sentence`), ending the answer; the
        block sentence that holds a bare value (`_holding_sentence`), the rest following. None keeps the
        sentence."""
        if not relevant or judge:
            return Instead(declined) if says_not_in_sources(sentence) else None
        in_blocks = [split_sentences(text) for _, text in blocks]
        evidence = check_answer(sentence, blocks)
        if (says_not_in_sources(sentence)  # `DECLINE_REPLY`, or the same in other words
                or policy.decline_below is not None and evidence.score < policy.decline_below
                or policy.answer_relevance is not None
                and not _speaks_to((asked, standalone), evidence, in_blocks, policy.answer_relevance, embed)):
            return Instead(_self_evident(asked, in_blocks, policy.answers_itself, embed) or declined)
        answering = _answering_sentence(asked, sentence, evidence, in_blocks, policy.swap_margin, embed)
        if answering is not None:
            return Instead(answering)
        holding = _holding_sentence(asked, sentence, in_blocks, policy.fragment_words, embed)
        return None if holding is None else Instead(holding, final=False)

    pieces = guarded(checked_first_sentence(guarded(provider.stream(messages, max_new_tokens), guard), review), shown)
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


def _speaks_to(questions: tuple[str, ...], evidence: Evidence, in_blocks: list[list[str]], threshold: float,
               embed: Embed) -> bool:
    """Whether the answer's best evidence sentence, alone or with a neighbour in its block (a sentence may name
    its subject in the one before), reaches `threshold` against one of `questions`; `in_blocks` holds each block's
    sentences."""
    if not evidence.sentences:
        return True
    best = evidence.sentences[0]
    texts = [best]
    for sentences in in_blocks:
        if best in sentences:
            i = sentences.index(best)
            texts += [" ".join(sentences[max(i - 1, 0):i + 1]), " ".join(sentences[i:i + 2])]
    return _reaches(questions, texts, threshold, embed)


def _reaches(questions: tuple[str, ...], texts: list[str], threshold: float, embed: Embed) -> bool:
    """Whether one of `texts` is `threshold` near one of `questions` by cosine."""
    vectors = embed([*questions, *texts])
    return float((vectors[len(questions):] @ vectors[:len(questions)].T).max()) >= threshold


def _answering_sentence(question: str, sentence: str, evidence: Evidence, in_blocks: list[list[str]],
                        margin: float | None, embed: Embed) -> str | None:
    """The block sentence nearest `question` (`context.nearness`) of those that state something (`_states`), when
    both the answer's `sentence` and the block sentence it rests on are `margin` less near: the model copied a
    neighbour of the sentence that answers. When that neighbour is next to it in its block the two go together, in
    their order, since the model's choice may hold what the nearest one only names; None when the answer stands
    (or `margin` is None). `in_blocks` holds each block's sentences."""
    if margin is None:
        return None
    placed = [(b, i) for b, sentences in enumerate(in_blocks) for i in range(len(sentences))]
    texts = [s for sentences in in_blocks for s in sentences]
    if not evidence.sentences or evidence.sentences[0] not in texts:
        return None
    near, stated = _nearness(question, texts, embed)
    best, rests_on = int(stated.argmax()), texts.index(evidence.sentences[0])
    # the answer's own sentence is embedded only when the sentence it rests on is already far below the best
    if near[rests_on] > stated[best] - margin or \
            nearness(question, [*texts, sentence], embed)[-1] > stated[best] - margin:
        return None
    (block, i), (other_block, j) = placed[best], placed[rests_on]
    if block == other_block and abs(i - j) == 1:
        return " ".join(texts[k] for k in sorted((best, rests_on)))
    return texts[best]


def _self_evident(question: str, in_blocks: list[list[str]], threshold: float | None, embed: Embed) -> str | None:
    """The block sentence nearest `question` of those that state something, when it is `threshold` near."""
    nearest = _nearest_stating(question, in_blocks, embed) if threshold is not None else None
    return nearest[0] if nearest is not None and nearest[1] >= threshold else None


def _nearest_stating(question: str, in_blocks: list[list[str]], embed: Embed) -> tuple[str, float] | None:
    """The block sentence nearest `question` (`context.nearness`) of those that state something, and its nearness."""
    texts = [s for sentences in in_blocks for s in sentences]
    stated = _nearness(question, texts, embed)[1] if texts else np.array([-np.inf])
    best = int(stated.argmax())
    return None if stated[best] == -np.inf else (texts[best], float(stated[best]))


def _nearness(question: str, texts: list[str], embed: Embed) -> tuple[np.ndarray, np.ndarray]:
    """`context.nearness` of each of `texts` to `question`, and the same with -inf for those that state nothing
    (`_states`), which never take an answer's place. The vectors are those remembered from choosing the context,
    when it was cut."""
    near = nearness(question, texts, embed)
    return near, np.where([_states(text) for text in texts], near, -np.inf)


def _holding_sentence(question: str, sentence: str, in_blocks: list[list[str]], most_words: int | None,
                      embed: Embed) -> str | None:
    """The block sentence nearest `question` of those that state something and hold every content word and number
    of `sentence`, when that is a bare value of at most `most_words` words ("24 hours") and not the same sentence;
    else None. `in_blocks` holds each block's sentences."""
    words = content_stems(sentence)
    if most_words is None or not words or len(sentence.split()) > most_words:
        return None
    holders = [s for sentences in in_blocks for s in sentences if _states(s) and words <= content_stems(s)]
    if not holders:
        return None
    best = holders[int(np.argmax(nearness(question, holders, embed)))]
    return None if best.split() == sentence.split() else best


def _states(sentence: str) -> bool:
    """Whether `sentence` can answer on its own: a heading ("How long records are kept") or a list's lead-in
    ("staff must:") is near the question's words without stating anything, unless it holds a number or code."""
    return sentence.rstrip().endswith((".", "!", "?")) or any(c.isdigit() for c in sentence)


def check_question(question: str) -> str:
    """The question with its whitespace collapsed; an empty or overlong one is refused with what to do."""
    question = re.sub(r"\s+", " ", question or "").strip()
    if not question:
        raise DocbotError("the question is empty; type a question about the documents")
    if len(question) > MAX_QUESTION_CHARS:
        raise DocbotError(f"the question is {len(question):,} characters long; ask in at most "
                          f"{MAX_QUESTION_CHARS:,} characters")
    return question
