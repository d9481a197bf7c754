"""Retrieval metrics over question sets with gold sources (the answer-quality metrics come with evaluation)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DocbotError
from .retrieval import Source

__all__ = ["GoldQuestion", "load_questions", "reciprocal_rank", "retrieval_scores"]


@dataclass(frozen=True)
class GoldQuestion:
    """A question with its gold answer and the file (and page) that holds it; `source` None means off-topic."""

    id: str
    question: str
    answer: str | None
    source: str | None
    page: int | None


def load_questions(path: str | Path) -> list[GoldQuestion]:
    """Questions from a JSONL file; a bad line is an error naming file:line."""
    questions = []
    with open(path, encoding="utf-8-sig") as fh:
        for no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                questions.append(GoldQuestion(str(row.get("id", no)), row["question"], row.get("answer"),
                                              row.get("source"), row.get("page")))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise DocbotError(f"{path}:{no}: not a question line ({type(exc).__name__}: {exc})") from exc
    return questions


def reciprocal_rank(sources: Sequence[Source], gold: GoldQuestion) -> float:
    """1/rank of the first source in the gold file (and on the gold page, if it has one); 0 if none."""
    for rank, src in enumerate(sources, start=1):
        if src.file == gold.source and (gold.page is None or src.page == gold.page):
            return 1.0 / rank
    return 0.0


def retrieval_scores(search: Callable[[str, int], Sequence[Source]], questions: Sequence[GoldQuestion],
                     k: int) -> dict[str, float]:
    """hit@k and MRR@k of `search` over the questions that have a gold source."""
    ranks = [reciprocal_rank(search(q.question, k), q) for q in questions if q.source]
    if not ranks:
        raise DocbotError("no question with a gold source to score retrieval on")
    return {"hit@k": sum(r > 0 for r in ranks) / len(ranks), "mrr": sum(ranks) / len(ranks), "n": len(ranks)}
