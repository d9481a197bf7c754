"""Questions with gold answers and sources, and the metrics that score answers and retrieval against them.

Answer metrics follow SQuAD (lower case, no punctuation or articles): exact match, token F1, and ROUGE-L (longest
common subsequence). Retrieval metrics: hit@k and reciprocal rank of the gold file (and page). Every mean comes
with a seeded bootstrap 95% interval, since small sets mislead.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..files import jsonl_rows
from ..errors import DocbotError
from ..rag.retrieval import Source

__all__ = ["GoldQuestion", "load_questions", "normalize_answer", "contains_answer", "exact_match", "token_f1", "rouge_l",
           "reciprocal_rank", "hit_at_k", "retrieval_scores", "bootstrap_interval", "paired_difference", "N_BOOTSTRAP"]

N_BOOTSTRAP = 1000


@dataclass(frozen=True)
class GoldQuestion:
    """A question with its gold answer and the file (and page) that holds it; `source` None means off-topic."""

    id: str
    question: str
    answer: str | None
    source: str | None
    page: int | None


def load_questions(path: str | Path) -> list[GoldQuestion]:
    """Questions from a JSONL file (a UTF-8 byte order mark is allowed); a bad line is an error naming file:line."""
    questions = []
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DocbotError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    for no, row in jsonl_rows(data.removeprefix(b"\xef\xbb\xbf")):
        if isinstance(row, UnicodeDecodeError):
            raise DocbotError(f"{path}:{no}: not a question line (not UTF-8 text: {row.reason} at byte "
                              f"{row.start + 1}); save the file as UTF-8") from row
        if isinstance(row, json.JSONDecodeError):
            raise DocbotError(f"{path}:{no}: not a question line (invalid JSON: {row})") from row
        problem = _row_problem(row)
        if problem:
            raise DocbotError(f"{path}:{no}: not a question line ({problem})")
        questions.append(GoldQuestion(str(row.get("id", no)), row["question"].strip(), row.get("answer"),
                                      row.get("source"), row.get("page")))
    if not questions:
        raise DocbotError(f"{path}: no questions")
    return questions


def _row_problem(row: object) -> str | None:
    if not isinstance(row, dict):
        return f"expected a JSON object with 'question', got {type(row).__name__ if row is not None else 'null'}"
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        return "'question' is missing, empty or not a string"
    for key in ("answer", "source"):
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"'{key}' must be a string or null"
    page = row.get("page")
    if page is not None and (not isinstance(page, int) or isinstance(page, bool)):
        return "'page' must be an integer or null"
    return None


# -- metrics ------------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, punctuation removed, articles (a, an, the) removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def contains_answer(prediction: str, gold: str) -> float:
    """1.0 when the gold answer occurs in the reply (normalised as for exact match): a right answer in a sentence
    ("The maximum daily dose is 40 mg.") counts, which exact match misses."""
    return float(f" {normalize_answer(gold)} " in f" {normalize_answer(prediction)} ")


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD's token F1: harmonic mean of the precision and recall of the shared normalised tokens (a bag)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, gold: str) -> float:
    """ROUGE-L F1 (beta 1): from the longest common subsequence of the normalised tokens."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0  # row[j-1] of the previous row
        for j, y in enumerate(b, start=1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def reciprocal_rank(sources: Sequence[Source], gold: GoldQuestion) -> float:
    """1/rank of the first source in the gold file (and on the gold page, if it has one); 0 if none."""
    for rank, src in enumerate(sources, start=1):
        if src.file == gold.source and (gold.page is None or src.page == gold.page):
            return 1.0 / rank
    return 0.0


def hit_at_k(sources: Sequence[Source], gold: GoldQuestion, k: int) -> float:
    """1.0 when one of the first `k` sources is the gold file (and page), else 0.0."""
    return float(reciprocal_rank(sources[:k], gold) > 0)


def retrieval_scores(search: Callable[[str, int], Sequence[Source]], questions: Sequence[GoldQuestion],
                     k: int) -> dict[str, float]:
    """hit@k and MRR@k of `search` over the questions that have a gold source."""
    ranks = [reciprocal_rank(search(q.question, k), q) for q in questions if q.source]
    if not ranks:
        raise DocbotError("no question with a gold source to score retrieval on")
    return {"hit@k": sum(r > 0 for r in ranks) / len(ranks), "mrr": sum(ranks) / len(ranks), "n": len(ranks)}


def bootstrap_interval(values: Sequence[float], n_resamples: int = N_BOOTSTRAP, seed: int = 0,
                       level: float = 0.95) -> dict:
    """The mean with a percentile bootstrap interval: `n_resamples` seeded resamples of the values with
    replacement. The same seed and the same number of values resample the same indices, so arms scored on the
    same questions are resampled together."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": round(float(data.mean()), 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "n": int(data.size)}


def paired_difference(after: Sequence[float], before: Sequence[float], n_resamples: int = N_BOOTSTRAP,
                      seed: int = 0) -> dict:
    """The mean of `after - before` over the same questions, with its paired bootstrap 95% interval and the
    smallest difference this many questions could detect (two-sided 5% level, 80% power: 2.8 standard errors of
    the per-question differences), so a null result says how large an effect it rules out."""
    import numpy as np

    diffs = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    result = bootstrap_interval(diffs, n_resamples, seed)
    if diffs.size > 1 and diffs.std() > 0:
        result["detectable"] = round(float(2.8 * diffs.std(ddof=1) / np.sqrt(diffs.size)), 4)
    return result
