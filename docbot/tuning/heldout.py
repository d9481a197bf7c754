"""The evaluation's held-out question sets, made from a dataset card.

- (a) `paraphrases`: the training questions in other words (the card's LLM paraphrases where the LLM generator
  wrote them, else model-free rewordings), none equal to a training question: did the model learn the facts?
- (b) `validation`: the questions generated from the validation documents, which training never saw: does the
  model answer better from context?
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DocbotError
from .finetuned import read_card
from .scoring import GoldQuestion, normalize_answer

__all__ = ["QuestionSet", "paraphrase", "held_out_paraphrases", "validation_questions"]


@dataclass(frozen=True)
class QuestionSet:
    """Questions evaluated together and reported apart."""

    name: str
    description: str
    questions: tuple[GoldQuestion, ...]


_COPULA_Q = re.compile(r"^(?P<wh>What|Who) (?P<verb>is|are|was|were) (?P<rest>.+)\?$")
_MODAL_Q = re.compile(r"^(?P<wh>When|Where|By whom|For how long|How long|How often) (?P<modal>must|should|can|may|"
                      r"will|do|does) (?P<subject>.+?) (?P<tail>be \w+|\w+)\?$")
_SECTION_Q = re.compile(r'^What does the section "(?P<heading>.+)" say\?$')


def paraphrase(question: str) -> str:
    """A model-free, deterministic rewording of a question (the rules generator's shapes get a real rewording,
    anything else a polite framing). Never returns the question itself.

    "What is the maximum daily dose of X?" -> "Tell me the maximum daily dose of X."
    "Who is the chief pharmacist?"         -> "Tell me who the chief pharmacist is."
    "When must the vaccine be stored?"     -> "Tell me when the vaccine must be stored."
    'What does the section "Fire" say?'    -> 'Summarise the section "Fire".'
    """
    q = " ".join(question.split())
    if m := _SECTION_Q.match(q):
        return f'Summarise the section "{m["heading"]}".'
    if m := _COPULA_Q.match(q):
        if m["wh"] == "What":
            return f"Tell me {m['rest']}."
        return f"Tell me who {m['rest']} {m['verb']}."
    if m := _MODAL_Q.match(q):
        if m["modal"] in ("do", "does"):
            return f"Tell me {m['wh'].lower()} {m['subject']} {m['tail']}{'s' if m['modal'] == 'does' else ''}."
        return f"Tell me {m['wh'].lower()} {m['subject']} {m['modal']} {m['tail']}."
    return f"I would like to know this: {q[:1].lower() + q[1:]}"


def _card_rows(card_path: Path, split: str) -> list[dict]:
    """The non-RAFT rows of one split as question/answer/source/page, from whichever format the card has."""
    card = read_card(card_path)
    for fmt in ("qa", "chat", "instruction"):
        name = next((n for n in card["files"] if n.startswith(f"{fmt}_data_") and n.endswith(f"_{split}.jsonl")), None)
        if name is None or not (card_path.parent / name).is_file():
            continue
        rows, seen = [], set()
        for line in (card_path.parent / name).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("raft"):
                continue
            question = row["question"]  # every row records its question beside the rendered prompt
            answer = {"qa": row.get("answer"), "instruction": row.get("output")}.get(fmt) \
                or row["messages"][-1]["content"]
            if question not in seen:
                seen.add(question)
                rows.append({"question": question, "answer": answer, "source": row.get("source"),
                             "page": row.get("page")})
        return rows
    raise DocbotError(f"{card_path.name}: none of its data files for the {split} split is on disk")


def held_out_paraphrases(card_path: str | Path) -> list[GoldQuestion]:
    """Set (a): the training questions reworded (the card's LLM paraphrases where present, else `paraphrase`);
    any rewording equal to a training question (after normalisation) is dropped."""
    card_path = Path(card_path)
    card = read_card(card_path)
    train = _card_rows(card_path, "train")
    written = {}
    for p in card.get("held_out_paraphrases", []):
        if p.get("question"):
            written.setdefault((p["answer"], p["source"], p["page"]), p["question"])
    asked = {normalize_answer(r["question"]) for r in train}
    out, seen = [], set()
    for n, row in enumerate(train, start=1):
        text = written.get((row["answer"], row["source"], row["page"])) or paraphrase(row["question"])
        key = normalize_answer(text)
        if key in asked or key in seen:
            text = paraphrase(row["question"])
            key = normalize_answer(text)
            if key in asked or key in seen:
                continue
        seen.add(key)
        out.append(GoldQuestion(f"paraphrase-{n}", text, row["answer"], row["source"], row["page"]))
    return out


def validation_questions(card_path: str | Path) -> list[GoldQuestion]:
    """Set (b): the questions generated from the validation documents (the split training never saw)."""
    card_path = Path(card_path)
    card = read_card(card_path)
    held = {s["file"] for s in card["sources"] if s["split"] == "validation"}
    return [GoldQuestion(f"validation-{n}", r["question"], r["answer"], r["source"], r["page"])
            for n, r in enumerate(_card_rows(card_path, "validation"), start=1) if r["source"] in held]
