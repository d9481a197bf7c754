"""The answer-quality suite: its domains and splits (`eval_sets/suite.json`), the fair plain baseline, and the
scores, defined once. `answer_quality.py --suite` runs it; the tests check its data with the same loaders.

A question's gold is a tuple of acceptable answers, each a tuple of strings that must all appear: a plain answer
with its alternatives is `(("30 days",), ("thirty days",))`, a list answer `(("a", "b", "c"),)`, an unanswerable
question `()`.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL_SETS = ROOT / "eval_sets"
SUITE = EVAL_SETS / "suite.json"
USED_UP = EVAL_SETS / "used_up.json"  # questions of a split already run and read: left out of it
KINDS = ("public benchmark", "technical manual", "invented-fact samples")

# The fair plain baseline: docbot's retrieval (hybrid), the top 4 blocks, this one user message, no system message.
BASELINE_K = 4
BASELINE_DECLINE = "NOT IN DOCUMENTS"
BASELINE_PROMPT = ("Answer the question using only the context below. If the context does not contain the answer, "
                   "reply exactly:\nNOT IN DOCUMENTS.\n\nContext:\n{context}\n\nQuestion: {question}")
MAX_WORDS = 50  # a reply longer than this answers nothing (it may quote the blocks), unless the gold is a list
_ARTICLES = {"a", "an", "the"}

Gold = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    gold: Gold
    source: str | None


@dataclass(frozen=True)
class Pair:
    """Two turns of one conversation; the gold is the answer to `then`."""

    id: str
    first: str
    then: str
    gold: Gold
    source: str | None
    kind: str  # "follow-up" or "new-topic"


@dataclass(frozen=True)
class Split:
    domain: str
    kind: str  # one of KINDS
    documents: Path
    questions: list[Question]
    pairs: list[Pair]


def gold_of(row: dict) -> Gold:
    """The acceptable answers of a question line: `answer` (a string, a list of strings that must all appear, or
    null) and its `alternatives`."""
    answer = row.get("answer")
    if answer is None:
        return ()
    first = tuple(answer) if isinstance(answer, list) else (answer,)
    return (first, *((alt,) for alt in row.get("alternatives", [])))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_splits(split: str, domains: list[str] | None = None, sampled: bool = True) -> list[Split]:
    """The suite's domains that have `split` ("dev" or "test"), optionally only those named, each with its
    questions and pairs less the used-up ones (`USED_UP`); `sampled` keeps the seeded sample the suite's `sample`
    sizes ask for."""
    suite = json.loads(SUITE.read_text(encoding="utf-8"))
    used_up = json.loads(USED_UP.read_text(encoding="utf-8")).get(split, {})
    chosen = [d for d in suite["domains"] if split in d and (domains is None or d["name"] in domains)]
    unknown = set(domains or ()) - {d["name"] for d in suite["domains"]}
    if unknown:
        raise SystemExit(f"{SUITE}: no domain {', '.join(sorted(unknown))}")
    splits = []
    for d in chosen:
        files = d[split]
        used = set(used_up.get(d["name"], ()))
        questions = [Question(r["id"], r["question"], gold_of(r), r.get("source"))
                     for r in read_jsonl(EVAL_SETS / files["questions"]) if r["id"] not in used]
        pairs = [Pair(r["id"], r["first"], r["then"], gold_of(r), r.get("source"), r["kind"])
                 for r in read_jsonl(EVAL_SETS / files["turns"]) if r["id"] not in used] if "turns" in files else []
        if sampled:
            rng = random.Random(f"{suite['seed']}:{d['name']}:{split}")
            size = d["sample"]
            questions = (_sample(rng, [q for q in questions if q.gold], size["answerable"])
                         + _sample(rng, [q for q in questions if not q.gold], size["unanswerable"]))
            pairs = _sample(rng, pairs, size.get("pairs", 0))
        splits.append(Split(d["name"], d["kind"], ROOT / d["documents"], questions, pairs))
    return splits


def _sample(rng: random.Random, items: list, n: int) -> list:
    """`n` of `items` chosen by `rng`, in their order in the file."""
    return items if n >= len(items) else [items[i] for i in sorted(rng.sample(range(len(items)), n))]


# -- scores ----------------------------------------------------------------------------------------------------------

def normalize(text: str) -> str:
    """Lower case, punctuation as spaces, no articles (as SQuAD's own evaluation), padded with spaces so that a
    gold matches whole words only."""
    words = re.sub(r"[\W_]+", " ", text.lower()).split()
    return " " + " ".join(w for w in words if w not in _ARTICLES) + " "


def holds(text: str, gold: Gold) -> bool:
    """Whether `text` holds one of the acceptable answers (every string of it)."""
    said = normalize(text)
    return any(all(normalize(part) in said for part in answer) for answer in gold)


def outcome(reply: str, declined: bool, gold: Gold) -> str:
    """"answered", "wrongly declined" or "wrong fact" for an answerable question; "declined" or "wrong fact" for
    an unanswerable one. A right fact in a reply of more than `MAX_WORDS` words is a wrong fact, unless the gold
    is a list."""
    if not gold:
        return "declined" if declined else "wrong fact"
    if declined:
        return "wrongly declined"
    listed = any(len(answer) > 1 for answer in gold)
    return "answered" if holds(reply, gold) and (listed or len(reply.split()) <= MAX_WORDS) else "wrong fact"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of k successes in n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


FIGURES = ("answered", "wrongly declined", "unanswerable declined", "wrong fact", "pairs resolved")


def figures(rows: list[dict], view: str) -> dict[str, tuple[int, int]]:
    """Each figure as (count, out of) over `rows` (as `answer_quality.py` records them), on the text shown
    (`view` "shown") or the model's own text ("raw")."""
    singles = [r for r in rows if not r["pair"]]
    answerable = [r[view] for r in singles if r["gold"]]
    unanswerable = [r[view] for r in singles if not r["gold"]]
    pairs = [r[view] for r in rows if r["pair"]]
    return {"answered": (answerable.count("answered"), len(answerable)),
            "wrongly declined": (answerable.count("wrongly declined"), len(answerable)),
            "unanswerable declined": (unanswerable.count("declined"), len(unanswerable)),
            "wrong fact": ((answerable + unanswerable).count("wrong fact"), len(singles)),
            "pairs resolved": (pairs.count("answered"), len(pairs))}


def cell(k: int, n: int) -> str:
    if not n:
        return "-"
    low, high = wilson(k, n)
    return f"{k}/{n} {k / n:.0%} [{low:.0%}-{high:.0%}]"


def baseline_message(question: str, blocks: list[str]) -> dict[str, str]:
    """The fair baseline's one user message."""
    return {"role": "user", "content": BASELINE_PROMPT.format(context="\n\n".join(b.strip() for b in blocks),
                                                              question=question)}
