"""Check an answer against the blocks it was written from: which sentences support it, and whether they do.

A small model can copy the right sentence and still change the one fact that matters (25 mg for 40 mg, another
room, another form code) or drift into fluent text that no block says. This check is lexical and model-free, so
it costs about a millisecond: the blocks are split into sentences (PDF line wraps joined again, list items and
lines kept apart), the answer into claims (its sentences), and each claim is matched to the block sentence that
covers most of its content words. Numbers, codes and names weigh more than other words, and a number or code
the evidence does not hold makes the answer unsupported outright, however much else matches: that is the
hallucination that matters in a clinic's documents. So does a value swapped with its neighbour: when the
sentence that says the rest of the claim gives another number or name, the claim is unsupported even if the
claimed value occurs elsewhere in the block.

It does not know the question, so a short answer that is true of the blocks but answers another question
("25 mg", where both 25 mg and 40 mg occur) passes; the answer path's relevance rules see that. It checks wording,
not meaning: a paraphrase with few of the blocks' words is flagged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .text import ABBREVIATIONS, NUMBER_WORDS, SOURCE_TALK, STOPWORDS, split_sentences, stem

__all__ = ["Evidence", "check_answer", "highlight", "says_not_in_sources",
           "SUPPORT_THRESHOLD", "MAX_SENTENCES"]

# Share of the answer's weighted content words that its evidence must hold: in the middle of the gap between the
# scores of correct answers and of the wrong ones that the number, code and name rules let through.
SUPPORT_THRESHOLD = 0.7
MAX_SENTENCES = 2  # evidence shown per answer: one per claim, the best first

_WEIGHT = {"number": 3.0, "code": 3.0, "name": 3.0, "word": 1.0}
_HARD = frozenset({"number", "code"})  # kinds the evidence must hold, whatever the coverage
_BOLD, _RESET = "\033[1m", "\033[0m"

_UNITS = frozenset("mg g kg mcg ml l mm cm m km percent degree hour minute second day week month year".split())
_SOURCE = r"(?:documents?|text|blocks?|context|information|sources?|data)"
_DECLINE = re.compile(  # only sentences about the sources: "Staff do not give results" is a fact to check
    rf"\bnot (?:in|covered (?:by|in)|found in|mentioned in|provided in|included in|stated in|given in|available "
    rf"in|specified in) (?:the |these |your )?{_SOURCE}|\b{_SOURCE} (?:provided |given )?(?:does|do|did) not "
    r"(?:contain|mention|provide|say|specify|include|state|give|cover)|\b(?:cannot|can't|can not|unable to) "
    r"(?:answer|find|tell|determine)|\bno (?:information|mention|details?) (?:about|on|of|regarding|is)|"
    r"\bi (?:do not|don't) know\b", re.I)
_CITATION = re.compile(r"\[\d+\]|\(\s*(?:block|source)\s*\d+\s*\)|\b(?:block|source)\s+\d+\b|"
                       r"\S+\.(?:pdf|txt|md|docx?)(?:\s+p\.\s*\d+)?", re.I)
_ADDRESS = re.compile(  # an e-mail or web address, one token
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|(?:https?://|www\.)[^\s<>\"]*[^\s<>\".,;:!?)\]]")
_TOKEN = re.compile(rf"{_ADDRESS.pattern}|"
                    r"[A-Za-z]{1,5}-?\d+[A-Za-z]?\b(?!:)|\d+(?:[.:]\d+)*|%|[A-Za-z]+(?:['’][A-Za-z]+)*")
_CODE = re.compile(r"[A-Za-z]{1,5}-?\d+[A-Za-z]?")
_CLOCK = re.compile(r"(?P<hour>1[0-2]|0?[1-9])(?::(?P<minute>[0-5]\d))?\s*(?P<half>[ap])\.?m\b\.?", re.I)
_NAME_GLUE = re.compile(r"(?:[\s.'’-]|\b(?:of|to|up|and|the|for|dr|mr|mrs|ms|prof)\b)*", re.I)


@dataclass(frozen=True)
class Evidence:
    """What the blocks say for an answer.

    `sentences`: the block sentences that support it, best first (at most MAX_SENTENCES). `supported`: False when
    the answer's content is not in the blocks (a decline or an empty answer is not checked: True, no sentences).
    `score`: the weighted share of the answer's content words the evidence holds (1.0 when there is nothing to
    check). `keywords`: those words as the evidence spells them, for `highlight`.
    """

    sentences: tuple[str, ...]
    supported: bool
    score: float
    keywords: tuple[str, ...]


class _Token(NamedTuple):
    norm: str
    kind: str
    surface: str
    joined: bool = False  # follows the previous token inside one name ("Office for Health and Safety")


class _Sentence(NamedTuple):
    text: str
    tokens: list[_Token]
    norms: frozenset[str]


def check_answer(answer: str, blocks: Sequence[tuple[str, str]], *,
                 threshold: float = SUPPORT_THRESHOLD) -> Evidence:
    """Evidence for `answer` in `blocks` ((label, text) pairs, as given to the model).

    Each claim (sentence) of the answer gets the block sentence that holds most of its weighted content words,
    plus a second one when the claim joins two facts. The answer is supported when the evidence holds at least
    `threshold` of its weighted content words, every number and code of each claim, each name whole, and no
    block sentence that says the rest of a claim gives another value instead ("adults ... 10 days" against a
    claimed "adults ... 14 days", even when "children ... 14 days" is also there).
    """
    claims = [c for c in split_sentences(_CITATION.sub(" ", answer or "")) if not _DECLINE.search(c)]
    claim_tokens = [t for t in (_tokens(c, answer=True) for c in claims) if t]
    if not claim_tokens:
        return Evidence((), True, 1.0, ())
    sentences = [_Sentence(s, toks, frozenset(t.norm for t in toks))
                 for _, text in blocks for s in split_sentences(text) for toks in [_tokens(s)] if toks]
    total = covered = 0.0
    supported = True
    picked: dict[str, float] = {}  # sentence -> the largest share of a claim it holds alone, for the ranking
    found: dict[str, str] = {}  # normalised word -> its spelling in the evidence
    for tokens in claim_tokens:
        wanted: dict[str, float] = {}
        for t in tokens:
            wanted[t.norm] = max(wanted.get(t.norm, 0.0), _WEIGHT[t.kind])
        names = _names(tokens)
        chosen = _evidence_for(wanted, sentences)
        held = set().union(*(s.norms for s in chosen)) & wanted.keys()
        held -= {w for name in names if not any(name <= s.norms for s in chosen) for w in name}
        total += sum(wanted.values())
        covered += sum(wanted[w] for w in held)
        hard = {t.norm for t in tokens if t.kind in _HARD}
        supported &= hard <= held and not _contradicted(tokens, wanted, hard, names, sentences)
        for s in chosen:
            share = sum(wanted[w] for w in s.norms & held) / sum(wanted.values())
            picked[s.text] = max(picked.get(s.text, 0.0), share)
            found.update((t.norm, t.surface) for t in s.tokens if t.norm in held and t.norm not in found)
    score = covered / total
    ranked = sorted(picked, key=lambda s: -picked[s])[:MAX_SENTENCES]  # stable: ties keep the answer's order
    keywords = tuple(dict.fromkeys(w for w in found.values() if any(w.lower() in s.lower() for s in ranked)))
    return Evidence(tuple(ranked), supported and score >= threshold, round(score, 4), keywords)


def says_not_in_sources(sentence: str) -> bool:
    """Whether `sentence` says that the sources lack something ("That is not in the documents.", "The clinic's
    email address is not in the documents.", "The text does not mention it."): the model declining in its own
    words."""
    return bool(_DECLINE.search(sentence))


def _names(tokens: list[_Token]) -> list[frozenset[str]]:
    """The claim's names, each as the set of its words ("Dr. Jane Smith" -> {jane, smith})."""
    names: list[set[str]] = []
    for previous, t in zip([None, *tokens], tokens):
        if t.kind != "name":
            continue
        if previous is not None and previous.kind == "name" and t.joined:
            names[-1].add(t.norm)
        else:
            names.append({t.norm})
    return [frozenset(n) for n in names]


def _evidence_for(wanted: dict[str, float], sentences: list[_Sentence]) -> list[_Sentence]:
    """The best sentence for one claim, and a second one that adds what the first lacks when it also shares a
    word (not a number) with what the first holds: it is about the same thing, so a wrong number is not excused
    by the same number in an unrelated sentence."""
    def gain(norms: frozenset[str], among) -> float:
        return sum(wanted[w] for w in norms.intersection(among))

    best = max(((gain(s.norms, wanted), -len(s.tokens), i) for i, s in enumerate(sentences)), default=None)
    if best is None or best[0] == 0:
        return []
    first = sentences[best[2]]
    missing = wanted.keys() - first.norms
    context = {w for w in wanted.keys() & first.norms if not w[:1].isdigit()}
    second = max(((gain(s.norms, missing), -len(s.tokens), i) for i, s in enumerate(sentences)
                  if i != best[2] and s.norms & context), default=None)
    return [first] if second is None or second[0] == 0 else [first, sentences[second[2]]]


def _contradicted(tokens: list[_Token], wanted: dict[str, float], hard: set[str], names: list[frozenset[str]],
                  sentences: list[_Sentence]) -> bool:
    """Whether the block sentences that hold all the rest of the claim give another value (number, code, name)
    in place of one of its values, and none of them gives the claimed one."""
    kinds = {t.norm: _kind(t) for t in tokens}
    hard_values = [frozenset({h}) for h in hard]
    for value in hard_values + names:
        context = wanted.keys() - value
        if len(context) < 2:
            continue  # "40 mg" alone: without the question there is no telling which value was asked for
        same = [s for s in sentences if context <= s.norms]
        if not same or any(value <= s.norms for s in same):
            continue
        claimed = {kinds[w] for w in value}
        if value not in hard_values:
            # a name may stand in for any words ("a blue badge" -> "a Site Manager"), unless another sentence
            # gives the name with most of the claim ("The Director is Dr. Jane Smith" for "The Director of the
            # clinic is Dr. Jane Smith")
            half = sum(wanted[w] for w in context) / 2
            if any(value <= s.norms and sum(wanted[w] for w in context & s.norms) >= half for s in sentences):
                continue
            claimed |= {"word", "name"}
        if any(_kind(t) in claimed and t.norm not in wanted for s in same for t in s.tokens):
            return True
    return False


def _kind(token: _Token) -> str:
    """What a value is, so that only a value of the same kind can stand in for it: "q mg" for 40 mg, "time"."""
    if token.kind == "number":
        return "time" if ":" in token.norm else "q " + token.norm.partition(" ")[2]
    return token.kind


def highlight(sentence: str, keywords: Iterable[str]) -> str:
    """`sentence` with each keyword (whole words, any case) in ANSI bold, for the terminal."""
    words = sorted({k for k in keywords if k.strip()}, key=len, reverse=True)
    if not words:
        return sentence
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(k) for k in words) + r")(?!\w)", re.I)
    return pattern.sub(lambda m: f"{_BOLD}{m.group(0)}{_RESET}", sentence)


def _tokens(text: str, answer: bool = False) -> list[_Token]:
    """Content tokens, normalised: lower case, crude stems, number words as digits, "40mg" as "40 mg", "07:30" as
    "7:30", "%" as "percent", codes without their hyphen. A number followed by a unit ("40 mg") is one token, so
    a swapped unit is a different fact; in block text the bare number and the unit are kept too, so an answer of
    just "40" still matches."""
    raw = [(m.group(0), m.start()) for m in _TOKEN.finditer(text)]
    tokens: list[_Token] = []
    i, end = 0, 0
    while i < len(raw):
        word, start = raw[i]
        kind, norm = _classify(word, text, start)
        i += 1
        if norm is None:
            continue
        joined = bool(tokens) and _NAME_GLUE.fullmatch(text[end:start]) is not None
        clock = _CLOCK.match(text, start) if kind == "number" else None
        if clock:  # "2pm", "2:30 p.m." -> "14:00", "14:30", as the documents write times
            hour = int(clock["hour"]) % 12 + (12 if clock["half"].lower() == "p" else 0)
            tokens.append(_Token(f"{hour}:{clock['minute'] or '00'}", "number", clock.group(0), joined))
            end = clock.end()
            while i < len(raw) and raw[i][1] < end:
                i += 1
            continue
        if kind == "number" and i < len(raw):
            unit_word, unit_start = raw[i]
            unit = _classify(unit_word, text, unit_start)[1]
            if unit in _UNITS and text[start + len(word):unit_start].strip() in ("", "-"):
                end = unit_start + len(unit_word)
                tokens.append(_Token(f"{norm} {unit}", "number", text[start:end], joined))
                if not answer:
                    tokens += [_Token(norm, "number", word), _Token(unit, "word", unit_word)]
                i += 1
                continue
        end = start + len(word)
        tokens.append(_Token(norm, kind, word, joined))
    return tokens


def _classify(word: str, text: str, start: int) -> tuple[str, str | None]:
    """(kind, normalised form) of one raw token; the form is None for a stopword."""
    if word == "%":
        return "word", "percent"
    if _ADDRESS.fullmatch(word):  # an address is a code: one made up ("info@clinic.example") is a wrong fact
        return "code", word.lower()
    if word[0].isdigit():
        if ":" in word:
            hours, _, rest = word.partition(":")
            return "number", f"{int(hours)}:{rest}"
        return "number", word
    if _CODE.fullmatch(word) and any(c.isdigit() for c in word):
        return "code", word.replace("-", "").lower()
    lower = word.lower().replace("’", "'")
    if lower.endswith("'s"):
        lower = lower[:-2]
    if lower in NUMBER_WORDS:
        return "number", NUMBER_WORDS[lower]
    if lower in STOPWORDS or lower in SOURCE_TALK:
        return "word", None
    before = text[:start].rstrip()
    after_title = before.rsplit(None, 1)[-1].rstrip(".").lower() in ABBREVIATIONS if before else False
    sentence_start = not before or before[-1] in ".!?:\n-*#>" and not after_title
    name = word[0].isupper() and not sentence_start or any(c.isupper() for c in word[1:]) and not word.isupper()
    return ("name" if name else "word"), stem(lower)
