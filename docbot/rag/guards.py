"""Guards on a model's streamed text, the same for every provider: no repeated sentence and no looping phrase ever
reaches the user.

Small models fall into loops: the same sentence again and again, on one line or many, or a phrase repeated without
any full stop ("The text ends with: The text ends with: ..."). The guard shows a sentence only once it cannot turn
into a repeat: while a partial sentence is the beginning of an earlier one it is held back; if it completes as a
repeat it is dropped and generation stops. Independently, generation stops as soon as any run of `LOOP_WORDS`
words occurs for the third time, before that third run is shown in full.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from .text import sentence_ends

__all__ = ["GuardReport", "guarded", "count_loops", "LOOP_WORDS"]

LOOP_WORDS = 6  # a run of this many words seen three times is a loop (the evaluation counts loops the same way)


@dataclass
class GuardReport:
    """What the guard saw: the raw text the model generated and why, if at all, it stopped it."""

    raw: str = ""
    fired: str | None = None  # "repeated sentence" or "looping phrase"


def guarded(pieces: Iterator[str], report: GuardReport | None = None) -> Iterator[str]:
    """The model's pieces with repeats held back and loops cut; closing it (or a loop) closes the model's stream.

    What is shown is always a prefix of what the model wrote: text is held back or cut, never changed.
    """
    report = report if report is not None else GuardReport()
    seen: set[str] = set()
    shown = 0  # characters of report.raw already yielded
    sentence_start = 0  # where the sentence being written begins in report.raw
    try:
        for piece in pieces:
            report.raw += piece
            raw = report.raw
            for gap_start, gap_end in sentence_ends(raw, sentence_start):
                sentence = _key(raw[sentence_start:gap_start])
                if sentence in seen:
                    report.fired = "repeated sentence"
                    break
                if sentence:
                    seen.add(sentence)
                sentence_start = gap_end
            partial = _key(raw[sentence_start:])
            held_back = report.fired or (partial and any(s.startswith(partial) for s in seen))
            allowed = sentence_start if held_back else len(raw)
            cut, hold = _loop_cut(raw[:allowed])
            if cut is not None:
                report.fired, allowed = "looping phrase", cut
            elif hold is not None:
                allowed = hold  # the last words begin a run already seen twice: wait for the next ones
            allowed = max(allowed, shown)
            if allowed > shown:
                yield raw[shown:allowed]
                shown = allowed
            if report.fired:
                return
        tail = report.raw[shown:]  # the model ended while a sentence was held back: a repeat, or just short
        if tail and _key(tail.rstrip(".!? ")) in {k.rstrip(".!? ") for k in seen}:
            report.fired = "repeated sentence"
        elif tail:
            yield tail
    finally:
        getattr(pieces, "close", lambda: None)()


def count_loops(text: str, words: int = LOOP_WORDS) -> int:
    """How many distinct runs of `words` words occur three or more times in `text`."""
    tokens = text.lower().split()
    runs = Counter(tuple(tokens[i:i + words]) for i in range(len(tokens) - words + 1))
    return sum(1 for n in runs.values() if n >= 3)


def _key(sentence: str) -> str:
    return " ".join(sentence.lower().split())


def _loop_cut(text: str) -> tuple[int | None, int | None]:
    """(where to cut `text` so that no run of LOOP_WORDS words occurs a third time, or None; where to start holding
    back because the last words begin a run that occurred twice, or None)."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    tokens = [text[a:b].lower() for a, b in spans]
    seen: Counter = Counter()
    for i in range(len(tokens) - LOOP_WORDS + 1):
        run = tuple(tokens[i:i + LOOP_WORDS])
        seen[run] += 1
        if seen[run] == 3:
            return spans[i][0], None
    twice = [run for run, n in seen.items() if n == 2]
    for j in range(min(LOOP_WORDS - 1, len(tokens)), 0, -1):
        tail = tuple(tokens[-j:])
        if any(run[:j - 1] == tail[:-1] and run[j - 1].startswith(tail[-1]) for run in twice):
            return None, spans[-j][0]
    return None, None
