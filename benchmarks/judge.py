"""The training-data judge's precision and recall on planted bad pairs (docbot/tuning/judge.py).

    python benchmarks/judge.py [--set dev|test]

Good pairs: the human-written questions of `eval_sets/medical_<set>.jsonl` that have an answer, each with the
sample chunk of its source that holds the answer. Bad pairs, planted from the good ones, one of each kind per
good pair where it can be made:
- ungrounded: the answer of a question about another document;
- off the chunk: the question of another document, with this pair's answer and chunk;
- misfit: a "who" question given a number or a "when/how many/how long" question given a name, both from this
  pair's own chunk;
- given away: the question with its answer appended ("..., given that it is 40 mg?").
The judge should drop the bad ones (recall) and keep the good ones (the share of drops that hit bad pairs is the
precision). Tune on dev; the test set is reported once.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docbot.rag.embeddings import Embedder  # noqa: E402
from docbot.rag.index import DomainIndex  # noqa: E402
from docbot.rag.store import open_store  # noqa: E402
from docbot.tuning.judge import REASONS, judge  # noqa: E402
from docbot.tuning.qa_generation import QAPair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("dev", "test"), default="dev")
    args = parser.parse_args()
    rows = [json.loads(line) for line in open(ROOT / "eval_sets" / f"medical_{args.set}.jsonl", encoding="utf-8")]
    rows = [r for r in rows if r.get("answer") and r.get("source")]
    with tempfile.TemporaryDirectory(prefix="judge_") as tmp:
        index = DomainIndex(open_store(Path(tmp)), "medical", Embedder("all-MiniLM-L6-v2"))
        index.sync(ROOT / "Documents" / "Medical", 1000, 100, progress=False)
        chunks = index.all_chunks()
    good = []
    for r in rows:
        chunk = next((c for c in chunks if c.source == r["source"] and r["answer"].lower() in c.text.lower()), None)
        if chunk is not None:
            good.append((r, chunk))
    rng = random.Random(0)
    cases = [("good", QAPair(r["question"], r["answer"], "human"), chunk) for r, chunk in good]
    for r, chunk in good:
        others = [o for o, _ in good if o["source"] != r["source"]]
        other = rng.choice(others)
        cases.append(("ungrounded", QAPair(r["question"], other["answer"], "planted"), chunk))
        cases.append(("off the chunk", QAPair(other["question"], r["answer"], "planted"), chunk))
        misfit = _misfit(r, chunk.text)
        if misfit is not None:
            cases.append(("misfit", QAPair(r["question"], misfit, "planted"), chunk))
        cases.append(("given away", QAPair(f"{r['question'].rstrip('?')}, given that it is {r['answer']}?",
                                           r["answer"], "planted"), chunk))

    verdicts = [(kind, judge(pair, chunk.text), pair) for kind, pair, chunk in cases]
    bad = [v for v in verdicts if v[0] != "good"]
    dropped_bad = sum(1 for _, reason, _ in bad if reason)
    dropped_good = [(pair, reason) for kind, reason, pair in verdicts if kind == "good" and reason]
    print(f"{args.set}: {len(good)} good pairs (of {len(rows)} answerable questions whose answer is in one chunk), "
          f"{len(bad)} planted bad pairs")
    for kind in ("ungrounded", "off the chunk", "misfit", "given away"):
        of_kind = [reason for k, reason, _ in bad if k == kind]
        print(f"  {kind:14} dropped {sum(1 for r in of_kind if r)}/{len(of_kind)}  "
              f"reasons: {dict(Counter(r for r in of_kind if r))}")
    recall = dropped_bad / len(bad)
    precision = dropped_bad / max(dropped_bad + len(dropped_good), 1)
    print(f"recall {recall:.2f} ({dropped_bad}/{len(bad)} bad pairs dropped), precision {precision:.2f} "
          f"({len(dropped_good)}/{len(good)} good pairs dropped)")
    for pair, reason in dropped_good:
        print(f"  good pair dropped ({reason}): {pair.question!r} -> {pair.answer!r}")
    assert set(r for _, r, _ in verdicts if r) <= set(REASONS)


def _misfit(row: dict, chunk_text: str) -> str | None:
    """An answer of the wrong type for `row`'s question, taken from its own chunk (so it is grounded): a number
    for a "who" question, a name for a "when/how many/how long" one; None when the question has no such type."""
    q = row["question"].lower()
    if q.startswith("who"):
        found = re.search(r"\b\d[\d:.,-]*(?: ?(?:mg|ml|days|years|hours|minutes))?", chunk_text)
    elif q.startswith(("when", "how many", "how long", "how often", "how much", "what time")):
        found = re.search(r"\b[A-Z][a-z]+ [A-Z][a-z'-]+\b", chunk_text)
    else:
        return None
    return found.group(0) if found else None


if __name__ == "__main__":
    main()
