"""Text as every part of docbot reads it: one sentence splitter, one way to find a sentence's end in a stream, one
stemmer and one set of word lists, so that the answer path, its checks and the fine-tuning data agree on what a
sentence and a content word are."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["split_sentences", "sentence_ends", "content_stems", "stem", "STOPWORDS", "SOURCE_TALK", "NUMBER_WORDS",
           "ABBREVIATIONS", "LIST_ITEM"]

STOPWORDS = frozenset(
    "a an the and or but of to in on at for by with from as is are was were be been being it its this that these "
    "those there their they them he she his her we our you your i me my do does did can could should would will "
    "shall may might must not no yes than then so if into about over under what which who whom whose when where "
    "why how all any each per also only just very has have had up out am pm dr mr mrs ms prof".split())
# Words an answer uses about its sources or its asker rather than to state a fact ("According to the documents,
# the manager here is ..."): no claim the documents must hold.
SOURCE_TALK = frozenset(
    "here now according answer based block blocks context document documents information mention mentioned note "
    "provide provided question say says state stated states text".split())
NUMBER_WORDS = {w: str(n) for n, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
# A full stop after these does not end a sentence ("Dr. Jane Smith", "e.g. gloves"), nor after a single letter.
ABBREVIATIONS = frozenset("dr mr mrs ms prof st no vs e.g i.e etc approx ext fig".split())
LIST_ITEM = re.compile(r"^\s*(?:[-*•>]|#{1,6}|\d{1,2}[.)])\s+")  # a list item's or heading's marker
# Where a sentence may end: after . ! ? (and closing quotes) before a capital or digit, or glued ("mg.The").
_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|(?<=[a-z0-9][.!?])(?=[A-Z])")
_WRAPPED_LINE = 70  # characters: a line this long that ends without punctuation was wrapped (PDF text)
_JOINING = frozenset("a an the of to for by with and or in on at from is are was as than under over per".split())


def sentence_ends(text: str, start: int = 0) -> list[tuple[int, int]]:
    """The (start, end) spans of the gaps between sentences in `text` from `start`: a line break, or an end of
    sentence that is not an abbreviation's full stop. A streaming reader sees a gap once the next sentence's
    first character has arrived."""
    gaps = []
    for match in re.finditer(rf"\n+|{_END.pattern}", text[start:]):
        a, b = match.start() + start, match.end() + start
        if text[a] != "\n" and _abbreviated(text[start:a]):
            continue
        gaps.append((a, b))
    return gaps


def _abbreviated(before: str) -> bool:
    """Whether `before` ends in an abbreviation's full stop ("Dr.") or a single letter's ("J.")."""
    if not before.endswith("."):
        return False
    last = before.rsplit(None, 1)[-1].rstrip(".").lower() if before.strip() else ""
    last = last.lstrip("\"'([")
    return last in ABBREVIATIONS or len(last) == 1 and last.isalpha()


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, whitespace collapsed: list items, headings and short lines stand alone, a line
    that wraps mid-sentence (as PDF text does) is joined to the next, and sentences end at . ! ? except after
    an abbreviation such as "Dr."."""
    units: list[str] = []
    previous = ""  # the line before, "" after a blank line
    for raw in unicodedata.normalize("NFKC", text).splitlines():
        line = " ".join(raw.split())
        item = LIST_ITEM.match(line)
        if item:
            line = line[item.end():]
        if not line:
            previous = ""
            continue
        if previous and not item and _continues(previous, line):
            units[-1] += " " + line
        else:
            units.append(line)
        previous = line
    sentences = []
    for unit in units:
        start = 0
        for a, b in sentence_ends(unit):
            sentences.append(unit[start:a])
            start = b
        sentences.append(unit[start:])
    return [s.strip() for s in sentences if s.strip()]


def _continues(previous: str, line: str) -> bool:
    """Whether `line` goes on with the sentence `previous` left open (a wrapped line)."""
    if previous[-1] in ".!?:;":
        return False
    if len(previous) >= _WRAPPED_LINE:
        return True
    if line[0].islower() or line[0].isdigit():
        return True
    last = previous.rsplit(" ", 1)[-1].lower()
    return last in _JOINING or previous[-1] in ",-("


def content_stems(text: str) -> set[str]:
    """The stems of `text`'s words that carry meaning (stopwords and source talk dropped), a number word as its
    digits ("three": "3"): how two texts' words are compared."""
    return {NUMBER_WORDS.get(w) or stem(w) for w in re.findall(r"[a-z0-9]+", text.lower())
            if w not in STOPWORDS and w not in SOURCE_TALK}


def stem(word: str) -> str:
    """A crude stem: plurals singular ("boxes", "policies"), then -ing, -ed, -er, -or off ("visiting",
    "visitors" and "visit" meet). Both sides get the same treatment, so a stem need not be a word."""
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        if word.endswith("ies"):
            word = word[:-3] + "y"
        elif word.endswith(("xes", "ches", "shes", "sses")):
            word = word[:-2]
        else:
            word = word[:-1]
    for suffix in ("ing", "ed", "er", "or"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[:-len(suffix)]
    return word
