"""The review of an answer's first unit (its first sentence, or a list's lead-in with its items) while it streams.

The text is shown as the model writes it; once the unit is complete the rules of an `AnswerPolicy` read it, and a
rule that replaces it sends a `Retraction`: the shown text is withdrawn and the rule's text takes its place. Each
rule is a named function below; `Review` applies them in the policy's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from typing import NamedTuple

import numpy as np

from .context import Embed, nearness
from .evidence import Evidence, check_answer, says_not_in_sources
from .guards import GuardReport, guarded
from .policy import AnswerPolicy
from .text import LIST_ITEM, content_stems, sentence_ends, split_sentences

__all__ = ["Instead", "Retraction", "Review", "checked_first_unit", "DECLINED", "CLOSER", "HOLDS_IT"]

# Why a unit was replaced, as the chat shows it.
DECLINED = "the documents do not back it"
CLOSER = "the documents' own sentence answers"
HOLDS_IT = "shown as the documents' sentence"


class Instead(NamedTuple):
    """What a review shows in place of the first unit, and why."""

    text: str
    final: bool = True  # the model's text after the unit is not shown (and no longer generated)
    reason: str = DECLINED


class Retraction(str):
    """A streamed piece that withdraws all the text shown before it; its own text takes that text's place."""

    reason: str

    def __new__(cls, text: str, reason: str) -> Retraction:
        piece = super().__new__(cls, text)
        piece.reason = reason
        return piece


def checked_first_unit(pieces: Iterator[str], review: Callable[[str], Instead | None],
                       report: GuardReport | None = None) -> Iterator[str]:
    """The pieces as they come; once the first unit is complete (or the stream ends) `review(unit)` reads it, and
    an `Instead` is sent as a `Retraction`, after which the stream is closed or the rest follows, less a next
    sentence that only repeats the replacement, through the loop guard (`report`) again."""
    try:
        held, shown, end = "", 0, None
        for piece in pieces:
            held += piece
            end, visible = _unit_end(held)
            if visible > shown:
                yield held[shown:visible]
                shown = visible
            if end is not None:
                break
        unit = held if end is None else held[:end]
        instead = review(unit) if unit.strip() else None
        if instead is None:
            yield from filter(None, chain([held[shown:]], pieces))
            return
        yield Retraction(instead.text, instead.reason)
        if instead.final:
            return
        following, rest = _first_sentence(chain([held[len(unit):]], pieces))
        after = chain([] if _key(following) == _key(instead.text) else [following], [rest], pieces)
        # guarded again with the replacement, words the model did not write: they can complete a loop with its next
        skip, shown = len(instead.text), GuardReport()
        for piece in guarded(chain([instead.text], after), shown):
            cut = min(skip, len(piece))
            skip -= cut
            if piece[cut:]:
                yield piece[cut:]
        if report is not None and shown.fired:
            report.fired = report.fired or shown.fired
    finally:
        getattr(pieces, "close", lambda: None)()


def _unit_end(held: str) -> tuple[int | None, int]:
    """(where the first unit of `held` ends, once that is known, and how much of `held` may be shown now). The unit
    is the first sentence or, when that sentence is a list's lead-in ("You need:"), the lead-in and the item lines
    after it; the first few characters of a line after a lead-in wait until they show whether it is an item."""
    gaps = sentence_ends(held, len(held) - len(held.lstrip()))
    if not gaps:
        return None, len(held)
    if not held[:gaps[0][0]].rstrip().endswith(":"):
        return gaps[0][0], gaps[0][0]
    at = gaps[0][0]
    lines = held[at:].split("\n")
    for n, line in enumerate(lines):
        complete = n < len(lines) - 1 or len(line.strip()) >= 4  # a marker is a few characters: wait for it
        if line.strip() and complete and not LIST_ITEM.match(line):
            return at, at
        if not complete:
            return None, at
        at += len(line) + 1
    return None, len(held)


def _first_sentence(pieces: Iterator[str]) -> tuple[str, str]:
    """Read `pieces` until a sentence is complete: (the text up to its end, the text read after it); (all that was
    read, "") when the stream ends first."""
    held = ""
    for piece in pieces:
        held += piece
        gaps = sentence_ends(held, len(held) - len(held.lstrip()))
        if gaps:
            return held[:gaps[0][0]], held[gaps[0][0]:]
    return held, ""


def _key(sentence: str) -> str:
    return " ".join(sentence.lower().split()).rstrip(".!? ")


class Review:
    """The policy's rules on an answer's first unit, given the questions it answers (as asked, and as searched)
    and the blocks it was written from."""

    def __init__(self, questions: tuple[str, str], blocks: Sequence[tuple[str, str]], policy: AnswerPolicy,
                 embed: Embed, declined: str) -> None:
        self.questions, self.blocks, self.policy, self.embed, self.declined = questions, blocks, policy, embed, declined
        self.in_blocks = [split_sentences(text) for _, text in blocks]

    def __call__(self, unit: str) -> Instead | None:
        """In the policy's order: the decline for a unit that declines itself, is hardly held by the blocks or
        rests on a sentence off the question (unless a block sentence answers by itself); the sentence that answers
        for one copied from its neighbour; the sentence that holds a bare value. A list is only declined or kept."""
        policy, asked = self.policy, self.questions[0]
        evidence = check_answer(unit, self.blocks)
        if (says_not_in_sources(unit) or hardly_held(evidence, policy.decline_below)
                or off_question(self.questions, evidence, self.in_blocks, policy.answer_relevance, self.embed)):
            return Instead(answers_itself(asked, self.in_blocks, policy.answers_itself, self.embed) or self.declined)
        if "\n" in unit.strip():
            return None
        answering = copied_neighbour(asked, unit, evidence, self.in_blocks, policy.swap_margin, self.embed)
        if answering is not None:
            return Instead(answering, reason=CLOSER)
        holding = bare_value(asked, unit, self.in_blocks, policy.fragment_words, self.embed)
        return None if holding is None else Instead(holding, final=False, reason=HOLDS_IT)


def declines_only(declined: str) -> Callable[[str], Instead | None]:
    """A review that keeps only the model's own decline (for a judge's blocks, whose choice no rule overrides)."""
    return lambda unit: Instead(declined) if says_not_in_sources(unit) else None


def hardly_held(evidence: Evidence, threshold: float | None) -> bool:
    """Whether less than `threshold` of the unit's weighted content words are in the blocks."""
    return threshold is not None and evidence.score < threshold


def off_question(questions: tuple[str, ...], evidence: Evidence, in_blocks: list[list[str]],
                 threshold: float | None, embed: Embed) -> bool:
    """Whether the unit's best evidence sentence, alone or with a neighbour in its block (a sentence may name its
    subject in the one before), stays below `threshold` against every one of `questions`."""
    if threshold is None or not evidence.sentences:
        return False
    best = evidence.sentences[0]
    texts = [best]
    for sentences in in_blocks:
        if best in sentences:
            i = sentences.index(best)
            texts += [" ".join(sentences[max(i - 1, 0):i + 1]), " ".join(sentences[i:i + 2])]
    vectors = embed([*questions, *texts])
    return float((vectors[len(questions):] @ vectors[:len(questions)].T).max()) < threshold


def answers_itself(question: str, in_blocks: list[list[str]], threshold: float | None, embed: Embed) -> str | None:
    """The block sentence nearest `question` of those that state something, when it is `threshold` near."""
    if threshold is None:
        return None
    texts = [s for sentences in in_blocks for s in sentences]
    if not texts:
        return None
    stated = _nearness(question, texts, embed)[1]
    best = int(stated.argmax())
    return texts[best] if stated[best] >= threshold else None


def copied_neighbour(question: str, unit: str, evidence: Evidence, in_blocks: list[list[str]],
                     margin: float | None, embed: Embed) -> str | None:
    """The block sentence nearest `question` of those that state something, when both the unit and the block
    sentence it rests on are `margin` less near: the model copied a neighbour of the sentence that answers. When
    that neighbour is next to it in its block the two go together, in their order, since the model's choice may
    hold what the nearest one only names; None when the unit stands."""
    if margin is None:
        return None
    placed = [(b, i) for b, sentences in enumerate(in_blocks) for i in range(len(sentences))]
    texts = [s for sentences in in_blocks for s in sentences]
    if not evidence.sentences or evidence.sentences[0] not in texts:
        return None
    near, stated = _nearness(question, texts, embed)
    best, rests_on = int(stated.argmax()), texts.index(evidence.sentences[0])
    # the unit itself is embedded only when the sentence it rests on is already far below the best
    if near[rests_on] > stated[best] - margin or nearness(question, [*texts, unit], embed)[-1] > stated[best] - margin:
        return None
    (block, i), (other_block, j) = placed[best], placed[rests_on]
    if block == other_block and abs(i - j) == 1:
        return " ".join(texts[k] for k in sorted((best, rests_on)))
    return texts[best]


def bare_value(question: str, unit: str, in_blocks: list[list[str]], most_words: int | None,
               embed: Embed) -> str | None:
    """The block sentence nearest `question` of those that state something and hold every content word and number
    of `unit`, when that is a bare value of at most `most_words` words ("24 hours") and not the same sentence."""
    words = content_stems(unit)
    if most_words is None or not words or len(unit.split()) > most_words:
        return None
    holders = [s for sentences in in_blocks for s in sentences if states(s) and words <= content_stems(s)]
    if not holders:
        return None
    best = holders[int(np.argmax(nearness(question, holders, embed)))]
    return None if best.split() == unit.split() else best


def states(sentence: str) -> bool:
    """Whether `sentence` can answer on its own: a heading or a list's lead-in is near the question's words
    without stating anything, unless it holds a number or code."""
    return sentence.rstrip().endswith((".", "!", "?")) or any(c.isdigit() for c in sentence)


def _nearness(question: str, texts: list[str], embed: Embed) -> tuple[np.ndarray, np.ndarray]:
    """`context.nearness` of each of `texts` to `question`, and the same with -inf for those that state nothing."""
    near = nearness(question, texts, embed)
    return near, np.where([states(text) for text in texts], near, -np.inf)

