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
from ..rag.text import STOPWORDS, split_sentences

__all__ = ["QAPair", "gives_away", "rules_pairs", "llm_pairs", "pairs_schema", "parse_llm_json", "grounded", "Deduper",
           "GROUNDING_THRESHOLD"]

GROUNDING_THRESHOLD = 0.8  # share of an answer's content words that must occur in its chunk
DUPLICATE_JACCARD = 0.8  # questions whose word sets overlap this much are near-duplicates
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
    return [w for w in re.findall(r"[a-z0-9]+(?:[.:'-][a-z0-9]+)*", text.lower()) if w not in STOPWORDS]


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
    """Pairs derived from the chunk's own sentences; no question contains its answer span. Each fact sentence gets
    its pattern's question (a rule, a place, a copula) and a question on each salient span (a time, a quantity, a
    code, a month, a name): a fact in more than one phrasing. Only a chunk with no fact sentence gets the filler
    "What does the section ... say?" (its first sentence) for each heading."""
    pairs = list(_field_pairs(text))
    for sentence in _sentences(text):
        found = _from_sentence(sentence)
        related = _relation_pairs(sentence)  # "Code Amber means ...": its spans would ask "Who means ...?"
        pairs += [p for p in ([found] if found else []) + (related or _span_pairs(sentence)) if not gives_away(p)]
    return pairs or [QAPair(f"What does the section \"{heading}\" say?", first_sentence, "rules")
                     for heading, first_sentence in _sections(text)]


def _field_pairs(text: str) -> Iterator[QAPair]:
    """A Markdown field line, "**Owner:** Ingrid Salcombe, Ward Manager": "Who is the owner of "Visiting"?" -> the
    name. The chunk's heading names what the field belongs to: every policy has an owner."""
    heading = re.search(r"^#{1,6}\s+(.+?)\s*$", text, re.M)
    of = f' of "{heading.group(1)}"' if heading else ""
    for m in re.finditer(r"^\s*(?:[-*]\s+)?\*\*(?P<key>[A-Za-z][^*:\n]{1,40}):\*\*\s*(?P<value>[^\n]{2,100}?)\s*$",
                         text, re.M):
        first = m["value"].split(", ")[0]
        person = bool(_PERSON.search(first))
        yield QAPair(f"{'Who' if person else 'What'} is the {m['key'].strip().lower()}{of}?",
                     first if person else m["value"], "rules")


_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_UNIT = (r"(?:working days|days|weeks|months|years|hours|minutes|seconds|mg|grams|ml|litres|degrees Celsius|degrees|"
         r"tablets|doses|bays|beds|percent|metres|identifiers|times|visitors|people|patients|staff|members|copies)")
# (pattern, question words): the span a question asks for, most specific first; a span inside a found one is skipped
_SPANS = (
    (re.compile(r"\b\d{1,2}:\d{2}(?:\s*(?:to|and|-)\s*(?:at\s+)?\d{1,2}:\d{2})?"), "what time"),
    (re.compile(rf"\b(?:(?P<prep>within|after|for|every|up to|at least|at most|under|over) )?\d+(?:\.\d+)?\s+"
                rf"{_UNIT}\b"), "how many {unit}"),
    (re.compile(r"\b[A-Z]{2,}-\d+\b"), "which code"),
    (re.compile(r"\b(?:[A-Z][a-z]+ )?(?i:room|ward|bay|floor|gate|door|cupboard|cabinet|locker|shelf) [A-Z]?\d+[A-Z]?\b"),
     "which {unit}"),
    (re.compile(rf"\b{_MONTH}(?:\s+and\s+{_MONTH})?\b"), "which months"),
    (re.compile(rf"\b{_DAY}s?\b"), "which day"),
    (re.compile(r"\b(?!(?:The|A|An|In|On|At|Each|Every|All)\b)(?:Dr\.?\s|Reverend\s|Sister\s|Nurse\s)?"
                r"[A-Z][a-z]+(?:\s[A-Z][a-z'-]+)+\b"), "who"),
    (re.compile(r"\b\d{3,}\b"), "which number"),
)
_ORG_END = re.compile(r"(?:Ltd|Laboratory|Unit|Officer|Committee|Room|Clinic|Service|Services|Shredding|Waste|Team|"
                      r"Office|Lead|Manager|Centre|Center|Hospital|Pharmacy|Board|Desk|System)$")


_MEANS = re.compile(r"^(?:In [^,]{3,40}, )?(?P<term>[A-Z\"'][^,;:]{1,40}?) (?:in [a-z ]{3,30} )?(?:means|stands for) "
                    r"(?P<answer>[^;]{3,90})$")  # 'Code Amber means a patient is missing'
_USED = re.compile(r"^(?P<subject>[A-Z][^,;:]{2,50}?) (?P<aux>is|are) (?P<verb>used|prescribed|given|needed|taken) "
                   r"(?P<prep>for|to treat|to) (?P<answer>[^;]{3,90})$")  # 'Zorvexin is prescribed for joint pain'


def _relation_pairs(sentence: str) -> list[QAPair]:
    """What a term means, what a thing is used for, and what is used for it: both ways round where they read."""
    m = _MEANS.match(sentence)
    if m:
        return [QAPair(f"What does {m['term'].strip(chr(34))} mean?", m["answer"], "rules")]
    m = _USED.match(sentence)
    if not m or not _good_subject(m["subject"]):
        return []
    subject = _lower_first(m["subject"])
    pairs = [QAPair(f"What {m['aux']} {subject} {m['verb']} {m['prep']}?", m["answer"], "rules")]
    if re.match(r"(?:A|An|The) ", m["subject"]):  # 'A lilac-top tube is used for a full blood count'
        pairs.append(QAPair(f"What {m['aux']} {m['verb']} {m['prep']} {m['answer']}?", m["subject"], "rules"))
    return pairs


def _span_pairs(sentence: str) -> list[QAPair]:
    """A question on each salient span of a fact sentence, the span its answer: "Who ..." when a name opens the
    sentence, else the sentence itself with the span replaced by its question words ("... take how many working
    days?"), the echo question a reader asks of a fact."""
    taken: list[tuple[int, int]] = []
    pairs = []
    for pattern, kind in _SPANS:
        for m in pattern.finditer(sentence):
            if any(a <= m.start() < b or a < m.end() <= b for a, b in taken):
                continue
            taken.append(m.span())
            span, before, asks = m.group(0), sentence[:m.start()].rstrip(), kind
            org = _ORG_END.search(span) if kind == "who" else None
            if kind == "who" and (org or re.search(r"\b[Tt]he$", before)):  # "sent to the Westmere Central
                noun = "company" if org and org.group(0) in ("Ltd", "Shredding", "Waste") else span.split()[-1].lower()
                asks, before = f"which {noun}", re.sub(r"\b[Tt]he$", "", before).rstrip()  # Laboratory": which one
            unit = re.sub(r"^(?:[a-z]+ )*[\d.]+\s+|\s+[A-Z]?\d+[A-Z]?$", "", span).lower()
            wh = asks.format(unit=unit.split()[-1] if kind == "which {unit}" else unit)
            if m.groupdict().get("prep"):  # "within 24 hours": within how many hours
                wh = f"{m['prep']} {wh}"
            rest = sentence[m.end():].rstrip(" .")
            if not before:
                question = f"{wh[0].upper()}{wh[1:] if wh != 'what time' else ''} {rest.lstrip()}?".replace("  ", " ")
                if wh.startswith("how many"):
                    continue  # "10 hours must pass ..." reads badly turned round
            else:
                question = f"{before} {wh}{rest}?"
            if len(question.split()) >= 4:
                pairs.append(QAPair(question, span, "rules"))
    return pairs


def _sentences(text: str) -> Iterator[str]:
    """Sentences of 4-30 words that end in a full stop (returned without it): headings, list lead-ins and
    fragments are no place for a question."""
    for sentence in split_sentences(text):
        if sentence.endswith(".") and 4 <= len(sentence.split()) <= 30:
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
