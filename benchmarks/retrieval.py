"""Retrieval quality, vector-only vs hybrid (BM25 + vectors, RRF), on a question set with gold sources.

    python benchmarks/retrieval.py [--set eval_sets/medical_dev.jsonl] [--domain medical] [-k 3]

The HYBRID_SEARCH default was chosen on the dev set with this script; the test set is for reporting only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from docbot.bot import ConfigurableDocBot  # noqa: E402
from docbot.tuning.scoring import load_questions, retrieval_scores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="eval_sets/medical_dev.jsonl")
    parser.add_argument("--domain", default="medical")
    parser.add_argument("--docs", default=None, help="domain folder (default Documents/<Domain>)")
    parser.add_argument("-k", type=int, nargs="+", default=[1, 3, 5])
    args = parser.parse_args()
    questions = load_questions(args.set)
    with tempfile.TemporaryDirectory() as index_dir:
        bot = ConfigurableDocBot(index_dir=index_dir)
        bot.load_domain(args.domain, args.docs, progress=False)
        print(f"{args.set}: {sum(1 for q in questions if q.source)} questions with a gold source")
        print(f"{'k':>3} {'mode':<8} {'hit@k':>7} {'MRR':>7}")
        for k in args.k:
            for hybrid in (False, True):
                s = retrieval_scores(lambda q, n: bot.retrieve(q, n, hybrid=hybrid), questions, k)
                print(f"{k:>3} {'hybrid' if hybrid else 'vector':<8} {s['hit@k']:>7.3f} {s['mrr']:>7.3f}")


if __name__ == "__main__":
    main()
