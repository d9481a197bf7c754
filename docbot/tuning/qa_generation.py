"""Question/answer pairs grounded in chunks: a model-free generator, an LLM generator, and the filters both pass.

The model-free ("rules") generator turns sentences that state a fact (a name, number, code, date) into a question
and an answer span, and headings into a question about their section; it runs offline in seconds. The LLM
generator asks the active provider for pairs in JSON: held to a JSON schema where the provider can (llama.cpp),
else parsed defensively. Every pair then passes `judge` (grounded, about its chunk, fitting its question, not
given away), and near-duplicate questions are dropped by `Deduper`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..providers import Provider

__all__ = ["QAPair", "gives_away", "rules_pairs", "llm_pairs", "pairs_schema", "parse_llm_json", "grounded", "Deduper",
           "GROUNDING_THRESHOLD"]

GROUNDING_THRESHOLD = 0.8  # share of an answer's content words that must occur in its chunk
DUPLICATE_JACCARD = 0.8  # questions whose word sets overlap this much are near-duplicates
_STOPWORDS = frozenset(
    "a an the and or but of to in on at for by with from as is are was were be been being it its this that these "
    "those there their they them he she his her we our you your i me my do does did can could should would will "
    "shall may might must not no yes than then so if into about over under what which who whom whose when where "
    "why how all any each per".split())
_SALIENT = re.compile(r"\d|\b[A-Z]{2,}-?\d+\b|\b(?:Dr|Mr|Mrs|Ms|Nurse|Professor)\.?\s+[A-Z]")
_PERSON = re.compile(r"^(?:Dr|Mr|Mrs|Ms|Nurse|Professor|Reverend|Sister)\.?\s+[A-Z]|^[A-Z][a-z]+ [A-Z][a-z'-]+$")
_COPULA = re.compile(r"^(?:The |the )?(?P<subject>[^,;:]{3,80}?) (?P<verb>is|are|was|were) (?P<answer>[^;]{2,90})$")
_MODAL = re.compile(r"^(?P<subject>[A-Z][^,;:]{2,60}?) (?P<modal>must|should|can|may) be (?P<verb>\w+ed) "
                    r"(?P<prep>at|in|on|by|within|for|every|before|after) (?P<answer>[^;]{2,80})$")
_PASSIVE = re.compile(r"^(?P<subject>[A-Z][^,;:]{2,60}?) (?P<aux>is|are) (?P<verb>\w+ed|kept|held|given|seen|taken|"
                      r"written|done|made|sent|stored) (?P<prep>at|in|on|by|within|for|every|before|after|until) "
                      r"(?P<answer>[^;]{2,80})$")  # "Children's records are kept until the patient's 25th birthday"
_PLACE = re.compile(r"\b(?:room|floor|cupboard|cabinet|office|ward|unit|building|wing|desk|lawn|car park|fridge)\b",
                    re.I)


@dataclass(frozen=True)
class QAPair:
    """A question, its answer, how it was made; `paraphrase` is another wording of the question, if known."""

    question: str
    answer: str
    generator: str
    paraphrase: str | None = None


def content_words(text: str) -> list[str]:
    """Lower-case words and numbers that carry meaning (stopwords dropped)."""
    return [w for w in re.findall(r"[a-z0-9]+(?:[.:'-][a-z0-9]+)*", text.lower()) if w not in _STOPWORDS]


def grounded(answer: str, chunk: str, threshold: float = GROUNDING_THRESHOLD) -> bool:
    """Whether at least `threshold` of the answer's content words occur in the chunk."""
    words = content_words(answer)
    if not words:
        return False
    present = set(content_words(chunk))
    return sum(w in present for w in words) / len(words) >= threshold


class Deduper:
    """Remembers kept questions and refuses near-duplicates (Jaccard overlap of their content words)."""

    def __init__(self, threshold: float = DUPLICATE_JACCARD) -> None:
        self.threshold = threshold
        self._seen: list[frozenset[str]] = []

    def add(self, question: str) -> bool:
        """True (and remembered) when the question is new enough to keep."""
        words = frozenset(content_words(question))
        if not words or any(len(words & s) / len(words | s) >= self.threshold for s in self._seen):
            return False
        self._seen.append(words)
        return True


# -- model-free generator ---------------------------------------------------------------------------------------


def gives_away(pair: QAPair) -> bool:
    """Whether the question already holds its answer: nothing to learn from it."""
    return pair.answer.lower().strip(" .") in pair.question.lower()


def rules_pairs(text: str) -> list[QAPair]:
    """Pairs derived from the chunk's own sentences; no question contains its answer span. Only a chunk with no
    fact sentence gets the filler "What does the section ... say?" (its first sentence) for each heading."""
    pairs = [pair for pair in map(_from_sentence, _sentences(text)) if pair and not gives_away(pair)]
    return pairs or [QAPair(f"What does the section \"{heading}\" say?", first_sentence, "rules")
                     for heading, first_sentence in _sections(text)]


def _sentences(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n|\n(?=#)|\n(?=[-*] )", text):
        block = " ".join(block.split()).lstrip("-* ")
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", block):
            sentence = sentence.strip()
            if sentence.endswith(".") and 4 <= len(sentence.split()) <= 30 and not sentence.startswith("#"):
                yield sentence[:-1]


def _sections(text: str) -> Iterator[tuple[str, str]]:
    """Markdown headings with the first sentence of the paragraph under them."""
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*\n\s*\n?([^\n#*|>][^\n]*)", text, re.M):
        heading = match.group(1).strip()
        sentence = re.split(r"(?<=[.!?])\s", match.group(2).lstrip("-* ").strip())[0]
        if len(sentence.split()) >= 4 and sentence.endswith(".") and heading.lower() not in sentence.lower():
            yield heading, sentence


def _from_sentence(sentence: str) -> QAPair | None:
    m = _MODAL.match(sentence)
    if m and _good_subject(m["subject"]) and (_SALIENT.search(m["answer"]) or _PLACE.search(m["answer"])):
        wh = _wh(m["prep"], m["answer"])
        answer = m["answer"] if wh in ("Where", "By whom") else f"{m['prep']} {m['answer']}"
        return QAPair(f"{wh} {m['modal']} {_lower_first(m['subject'])} be {m['verb']}?", answer, "rules")
    m = _PASSIVE.match(sentence)
    if m and _good_subject(m["subject"]) and (_SALIENT.search(m["answer"]) or _PLACE.search(m["answer"])):
        wh = "Until when" if m["prep"] == "until" else _wh(m["prep"], m["answer"])
        answer = m["answer"] if wh in ("Where", "By whom") else f"{m['prep']} {m['answer']}"
        return QAPair(f"{wh} {m['aux']} {_lower_first(m['subject'])} {m['verb']}?", answer, "rules")
    m = _COPULA.match(sentence)
    if m and _good_subject(m["subject"]) and re.match(r"[0-9A-Z]", m["answer"]) and (
            _SALIENT.search(m["answer"]) or _PERSON.search(m["answer"])) and len(m["subject"].split()) <= 12:
        wh = "Who" if _PERSON.search(m["answer"]) else "What"
        article = "the " if sentence[:4].lower() == "the " else ""
        return QAPair(f"{wh} {m['verb']} {article}{m['subject']}?", m["answer"], "rules")
    return None


def _wh(prep: str, answer: str) -> str:
    """The question word that the preposition and the kind of answer call for."""
    if prep in ("at", "in", "on") and _PLACE.search(answer):
        return "Where"
    if prep == "for" and re.match(r"\d", answer):
        return "For how long"
    if prep == "by" and not re.search(r"\d", answer):
        return "By whom"
    return "When"


def _good_subject(subject: str) -> bool:
    """Subjects that make a readable question: no pronouns, no clause fragments, no run-in headings."""
    words = subject.split()
    return (words[0] not in ("Her", "His", "Its", "Their", "This", "That", "It", "These", "Those", "There")
            and not {"who", "which", "that", "A"} & set(words[1:])
            and not any(w[:1].isupper() and p[:1].islower() and p not in ("of", "for", "the", "and")
                        for p, w in zip(words, words[1:])))


def _lower_first(text: str) -> str:
    """'The vaccine' -> 'the vaccine', but names and acronyms keep their capitals."""
    first, _, rest = text.partition(" ")
    return (first.lower() if first in ("The", "A", "An", "Each", "Every", "All") else first) + (" " + rest if rest else "")


# -- LLM generator ----------------------------------------------------------------------------------------------

_LLM_PROMPT = """{text}

Write {n} questions and answers about facts in the text above, as JSON objects with keys "question", "answer"
(copied from the text) and "paraphrase" (the question in other words)."""
_SCHEMA_PROMPT = """{text}

Write {n} different questions about facts stated in the text above. For each, give the answer as a short phrase
copied word for word from the text, and the question again in other words (paraphrase)."""
_KEYS = {"question": ("question", "q", "query", "prompt"), "answer": ("answer", "a", "response", "reply"),
         "paraphrase": ("paraphrase", "rephrased", "paraphrased_question", "alternative")}


def pairs_schema(n: int) -> dict:
    """The JSON schema of a reply: exactly `n` objects with a non-empty question, answer and paraphrase."""
    text = {"type": "string", "minLength": 3, "maxLength": 160}  # 3 x 3 x 160 characters fit in 400 tokens
    item = {"type": "object", "properties": {"question": text, "answer": text, "paraphrase": text},
            "required": ["question", "answer", "paraphrase"], "additionalProperties": False}
    return {"type": "array", "items": item, "minItems": n, "maxItems": n}


def llm_pairs(provider: Provider, text: str, n: int = 3, max_new_tokens: int = 400) -> tuple[list[QAPair], bool]:
    """Pairs written by the model (the caller checks grounding), and whether its reply was complete.

    A provider that follows a JSON schema (llama.cpp) is held to `pairs_schema`, so a complete reply always
    parses; a reply cut off by `max_new_tokens` is a failure and gives no pairs. Any other provider is asked in
    words and its reply parsed defensively (`parse_llm_json`).
    """
    if provider.follows_schema:
        reply, complete = provider.generate_json(
            [{"role": "user", "content": _SCHEMA_PROMPT.format(n=n, text=text.strip())}], pairs_schema(n),
            max_new_tokens)
        if not complete:
            return [], False
        return [QAPair(o["question"].strip(), o["answer"].strip(), "llm", o["paraphrase"].strip() or None)
                for o in json.loads(reply)], True
    reply = provider.generate([{"role": "user", "content": _LLM_PROMPT.format(n=n, text=text.strip())}],
                              max_new_tokens)
    triples = parse_llm_json(reply)
    return [QAPair(q, a, "llm", p) for q, a, p in triples], bool(triples)


def parse_llm_json(reply: str) -> list[tuple[str, str, str | None]]:
    """(question, answer, paraphrase) triples from a model's reply. Tolerates prose or code fences around the
    JSON, a list or single objects, trailing commas, truncated output (complete objects are kept), a few common
    key spellings, and, failing JSON altogether, "Question: ... Answer: ..." lines."""
    objects = []
    for match in re.finditer(r"\{[^{}]*\}", reply):  # every flat object, so truncation loses only the last one
        for candidate in (match.group(0), re.sub(r",\s*\}$", "}", match.group(0))):
            try:
                obj = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(obj, dict):
                objects.append(obj)
            break
    if not objects:
        objects = [{"question": q, "answer": a} for q, a in
                   re.findall(r"Question:\s*(.+?)\s*\n+\s*Answer:\s*(.+?)\s*(?:\n|$)", reply)]
    triples = []
    for obj in objects:
        found = {key: next((str(obj[k]).strip() for k in names if isinstance(obj.get(k), (str, int, float))), None)
                 for key, names in _KEYS.items()}
        if found["question"] and found["answer"]:
            triples.append((found["question"], found["answer"], found["paraphrase"] or None))
    return triples
