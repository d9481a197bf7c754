"""The judge every generated pair passes before it becomes training data: rules with stated thresholds.

A pair is dropped, with the first reason that applies, when
- its answer is not in its chunk: under `GROUNDING_THRESHOLD` of the answer's content words occur there;
- its question is not about its chunk: under `ANSWERABLE_THRESHOLD` of the question's content words occur there
  (a question written for another passage, or one the passage cannot answer);
- its answer does not fit its question: a "who" question without a name in the answer, or a "when", "how many",
  "how long" or "how often" question without a number, date or frequency in it;
- its question gives its answer away: the answer adds no content word to the question (nothing to learn).

Measured on the human-written dev questions of the Medical sample with bad pairs planted from them
(`benchmarks/judge.py`); the thresholds were chosen there, and the test set's figures are in the README.
"""

from __future__ import annotations

import re

from ..rag.text import content_stems
from .qa_generation import GROUNDING_THRESHOLD, QAPair, content_words

__all__ = ["ANSWERABLE_THRESHOLD", "GROUNDING_THRESHOLD", "REASONS", "judge"]

ANSWERABLE_THRESHOLD = 0.5  # share of the question's content words its chunk must hold (dev: see the module doc)
REASONS = ("answer not in its chunk", "question not about its chunk", "answer does not fit the question",
           "answer given away by the question")
_ASKS_WORD = frozenset("long many much often old far big large high early late wide soon".split())  # "how long"
_ASKS_NUMBER = re.compile(r"^(?:when|what time|what year|what date|how (?:long|many|much|often|old|far|soon|"
                          r"early|late)|at what (?:age|time|temperature)|until when)\b", re.I)
_ASKS_NAME = re.compile(r"^who(?:m|se)?\b", re.I)
_NUMBERISH = re.compile(r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|"
                        r"forty|fifty|hundred|thousand|once|twice|daily|weekly|monthly|yearly|annually|every|each|"
                        r"hourly|noon|midnight|morning|evening|night|monday|tuesday|wednesday|thursday|friday|"
                        r"saturday|sunday|january|february|march|april|may|june|july|august|september|october|"
                        r"november|december|birthday|year|month|week|day|hour|minute|before|after|until|end)\b",
                        re.I)
_CAPITALISED = re.compile(r"\b[A-Z][a-z'-]+|\b[A-Z]{2,}\b")  # a name, a title, an acronym
_ROLE = re.compile(r"\b(?:officer|nurse|pharmacist|doctor|manager|lead|team|clerk|head|director|committee|board|"
                   r"staff|desk|department|service|owner|admin\w*)\b", re.I)


def judge(pair: QAPair, chunk_text: str) -> str | None:
    """Why `pair` is not fit to train on (one of `REASONS`), or None when it is."""
    in_chunk = set(content_words(chunk_text))
    answer_words = content_words(pair.answer)
    if not answer_words or _share(answer_words, in_chunk) < GROUNDING_THRESHOLD:
        return REASONS[0]
    question_stems = [w for w in content_stems(pair.question) if w not in _ASKS_WORD]  # "closes" meets "close"
    if question_stems and _share(question_stems, content_stems(chunk_text)) < ANSWERABLE_THRESHOLD:
        return REASONS[1]
    question = pair.question.strip()
    if (_ASKS_NUMBER.match(question) and not _NUMBERISH.search(pair.answer)) or \
            (_ASKS_NAME.match(question) and not (_CAPITALISED.search(pair.answer) or _ROLE.search(pair.answer))):
        return REASONS[2]
    if not set(answer_words) - set(content_words(pair.question)):
        return REASONS[3]
    return None


def _share(words: list[str], present: set[str]) -> float:
    return sum(w in present for w in words) / len(words)
