"""The judge's decision alone, on whole dev splits: no answer model, so every question of the suite can be asked.

    python benchmarks/answer_judge.py --judge FOLDER [--domains a,b] [--top-k K] [--thresholds 0.3,0.5] [--out F]

For each question (pairs left out: their second turn leans on the first) it retrieves the top K blocks as `ask`
does, scores them with the judge, and reports per kind of domain, at each threshold: the share of answerable
questions the judge lets through (a block at the threshold or more), the share of those whose passing blocks hold
the gold answer, and the share of unanswerable questions it declines; beside it the same for today's first gate
(a block at the relevance threshold by cosine). Then the judge's cost per question (all K blocks in one batch),
p50 and p95, on this machine's threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.suite import KINDS, holds, load_splits, wilson  # noqa: E402
from docbot import ConfigurableDocBot  # noqa: E402
from docbot.rag.judge import load_judge  # noqa: E402


def measure(bot: ConfigurableDocBot, splits, k: int, folder: str) -> list[dict]:
    judge, rows = load_judge(folder), []
    for split in splits:
        bot.load_domain(split.domain, split.documents, progress=False)
        for q in tqdm(split.questions, desc=split.domain, file=sys.stderr):
            found = bot.retrieve(q.question, k)
            started = time.perf_counter()
            scores = judge.score(q.question, [s.text for s in found])
            seconds = time.perf_counter() - started
            rows.append({"domain": split.domain, "kind": split.kind, "id": q.id, "question": q.question,
                         "answerable": bool(q.gold), "scores": [round(float(s), 4) for s in scores],
                         "cosines": [s.score for s in found], "seconds": seconds,
                         "gold_in": [bool(q.gold) and holds(s.text, q.gold) for s in found]})
    return rows


def report(rows: list[dict], thresholds: list[float], cosine_threshold: float) -> None:
    def line(name: str, group: list[dict], passes) -> str:
        answerable = [r for r in group if r["answerable"]]
        unanswerable = [r for r in group if not r["answerable"]]
        through = [r for r in answerable if any(passes(r))]
        grounded = [r for r in through if any(p and g for p, g in zip(passes(r), r["gold_in"]))]
        declined = [r for r in unanswerable if not any(passes(r))]
        return (f"  {name:<18} answerable through {_share(len(through), len(answerable))}  with the gold "
                f"{_share(len(grounded), len(through))}  "
                f"unanswerable declined {_share(len(declined), len(unanswerable))}")

    for kind in KINDS:
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        print(f"\n{kind}: {sum(r['answerable'] for r in group)} answerable, "
              f"{sum(not r['answerable'] for r in group)} unanswerable questions")
        print(line(f"cosine >= {cosine_threshold}", group, lambda r: [c >= cosine_threshold for c in r["cosines"]]))
        for t in thresholds:
            print(line(f"judge >= {t}", group, lambda r, t=t: [s >= t for s in r["scores"]]))
    ms = np.array([r["seconds"] for r in rows]) * 1000
    print(f"\njudge cost per question ({len(rows)} questions, its top blocks in one batch): "
          f"p50 {np.percentile(ms, 50):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms")


def _share(count: int, total: int) -> str:
    if not total:
        return "-"
    low, high = wilson(count, total)
    return f"{count}/{total} {count / total:.2f} [{low:.2f}, {high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", required=True, metavar="FOLDER", help="the judge (scripts/train_judge.py)")
    parser.add_argument("--domains", default=None, help="only these domains, comma-separated")
    parser.add_argument("--top-k", type=int, default=None, help="blocks scored per question (default: config)")
    parser.add_argument("--thresholds", default="0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    parser.add_argument("--sampled", action="store_true", help="the seeded samples, not whole splits")
    parser.add_argument("--out", default=None, help="write every question's scores to this JSON file")
    args = parser.parse_args()
    splits = load_splits("dev", args.domains.split(",") if args.domains else None, sampled=args.sampled)
    with tempfile.TemporaryDirectory(prefix="docbot-judge-") as index_dir:
        bot = ConfigurableDocBot(index_dir=index_dir, models_dir=str(ROOT / "models"))
        k = args.top_k or bot.config.top_k
        rows = measure(bot, splits, k, args.judge)
        print(f"top {k} blocks, hybrid search {bot.config.hybrid_search}", file=sys.stderr)
        report(rows, [float(t) for t in args.thresholds.split(",")], bot.config.relevance_threshold)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
