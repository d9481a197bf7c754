"""Answer quality through docbot's own answer path: accuracy, declines, loops, follow-ups; and a plain pipeline.

    python benchmarks/answer_quality.py [--set dev|test] [--provider llamacpp] [--model NAME] [--top-k K]
                                        [--plain] [--limit N]

For the domain's answerable questions: the share whose reply contains the gold answer (case-insensitive) and the
share wrongly declined; for its off-topic questions (no gold answer): the share declined. Loops are counted on
the model's raw stream before the guard (a run of 6 words seen 3 or more times), with how often the guard fired.
The multi-turn set (`<domain>_turns_<set>.jsonl`): a pair is resolved when the reply to `then` contains the gold
answer and cites the gold source. `--plain` also runs the plain pipeline on the same questions and model: the top
4 chunks by vectors alone, one prompt, no guards, no decline rule. Tune on dev; report test once.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docbot import ConfigurableDocBot, Conversation  # noqa: E402
from docbot.rag.guards import count_loops  # noqa: E402
from docbot.tuning.scoring import load_questions  # noqa: E402

PLAIN_K = 4


def contains(reply: str, gold: str) -> bool:
    return " ".join(gold.lower().split()) in " ".join(reply.lower().split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="dev", choices=("dev", "test"))
    parser.add_argument("--domain", default="medical")
    parser.add_argument("--provider", default="llamacpp")
    parser.add_argument("--model", default=None, help="default: the config's answer model")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=None, help="relevance threshold (default: config)")
    parser.add_argument("--plain", action="store_true", help="also run the plain pipeline")
    parser.add_argument("--limit", type=int, default=0, help="at most N questions per set (0: all)")
    parser.add_argument("--out", default=None, help="write every reply to this JSON file")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the config's)")
    parser.add_argument("--context-chars", type=int, default=None, help="characters kept per block (default: config)")
    args = parser.parse_args()
    overrides = {k: v for k, v in (("top_k", args.top_k), ("relevance_threshold", args.threshold),
                                   ("n_threads", args.threads), ("context_chars", args.context_chars))
                 if v is not None}
    questions = load_questions(ROOT / "eval_sets" / f"{args.domain}_{args.set}.jsonl")
    turns_file = ROOT / "eval_sets" / f"{args.domain}_turns_{args.set}.jsonl"
    turns = [json.loads(line) for line in turns_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.limit:
        questions, turns = questions[:args.limit], turns[:args.limit]
    with tempfile.TemporaryDirectory(prefix="docbot-quality-") as index_dir:
        bot = ConfigurableDocBot(provider=args.provider, model=args.model, index_dir=index_dir,
                                 documents_dir=str(ROOT / "Documents"), models_dir=str(ROOT / "models"),
                                 **overrides)
        bot.load_domain(args.domain, progress=False)
        t = time.perf_counter()
        model = bot.provider
        print(f"model {model} (loaded in {time.perf_counter() - t:.1f} s); {args.set} set: {len(questions)} "
              f"questions, {len(turns)} turn pairs; top_k {bot.config.top_k}, threshold "
              f"{bot.config.relevance_threshold}, context_chars {bot.config.context_chars}", flush=True)
        rows, started = [], time.perf_counter()
        for q in questions:
            t = time.perf_counter()
            a = bot.ask(q.question, conversation=Conversation(0))
            rows.append({"question": q.question, "gold": q.answer, "reply": a.text, "covered": a.covered,
                         "raw": a.guard.raw, "raw_loops": count_loops(a.guard.raw), "guard": a.guard.fired,
                         "seconds": round(time.perf_counter() - t, 2)})
            print("." if a.covered else "d", end="", flush=True)
        pairs = []
        for pair in turns:
            chat = Conversation(bot.config.history_turns)
            bot.ask(pair["first"], conversation=chat)
            a = bot.ask(pair["then"], conversation=chat)
            pairs.append({**pair, "reply": a.text, "cited": [s.file for s in a.sources],
                          "resolved": contains(a.text, pair["answer"]) and pair["source"] in [s.file for s in
                                                                                            a.sources]})
        report = summarise("docbot", rows, pairs)
        report["seconds"] = round(time.perf_counter() - started, 1)
        results = [report]
        if args.plain:
            results.append(summarise("plain", [plain(bot, model, q) for q in questions], None))
    print(f"\n{'pipeline':<8} {'answered':>9} {'wrongly declined':>17} {'off-topic declined':>19} "
          f"{'raw loops':>10} {'guard fired':>12} {'turns resolved':>15}")
    for r in results:
        print(f"{r['name']:<8} {r['answered']:>9} {r['wrongly_declined']:>17} {r['declined']:>19} "
              f"{r['raw_loops']:>10} {r['guard_fired']:>12} {r['turns']:>15}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "pairs": pairs, "results": results}, indent=1))


def plain(bot: ConfigurableDocBot, model, q) -> dict:
    """The plain pipeline: vectors alone, the top 4 chunks, one prompt, no guards and no decline rule."""
    hits = bot.retrieve(q.question, PLAIN_K, hybrid=False)
    context = "\n\n".join(h.text for h in hits)
    reply = model.generate([{"role": "user", "content": f"Context:\n{context}\n\nQuestion: {q.question}"}],
                           bot.config.max_new_tokens)
    return {"question": q.question, "gold": q.answer, "reply": reply, "covered": True,
            "raw_loops": count_loops(reply), "guard": None}


def summarise(name: str, rows: list[dict], pairs: list[dict] | None) -> dict:
    answerable = [r for r in rows if r["gold"] is not None]
    off_topic = [r for r in rows if r["gold"] is None]

    def share(part: int, whole: int) -> str:
        return f"{part}/{whole} {part / whole:.0%}" if whole else "-"

    return {"name": name,
            "answered": share(sum(contains(r["reply"], r["gold"]) for r in answerable), len(answerable)),
            "wrongly_declined": share(sum(not r["covered"] for r in answerable), len(answerable)),
            "declined": share(sum(not r["covered"] for r in off_topic), len(off_topic)),
            "raw_loops": sum(r["raw_loops"] > 0 for r in rows),
            "guard_fired": sum(bool(r["guard"]) for r in rows),
            "turns": share(sum(p["resolved"] for p in pairs), len(pairs)) if pairs is not None else "-"}


if __name__ == "__main__":
    main()
