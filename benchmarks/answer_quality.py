"""Answer quality on the suite's domains: docbot's answer path beside the fair plain baseline, one table.

    python benchmarks/answer_quality.py --suite [--split dev] [--pipelines docbot,baseline] [--out FILE]
    python benchmarks/answer_quality.py --domains medical,git [--full] [--model NAME] [--top-k K] ...

The domains, their kinds, files and seeded sample sizes are `eval_sets/suite.json`; the baseline and the scores are
`benchmarks/suite.py` (eval_sets/README.md says what each figure means). Each figure is printed per domain and
pooled per kind of domain, with its 95% interval, on the text shown and on the model's own text before anything
replaced it, with the median seconds to the first text and to the whole answer. Choose on dev; the sealed test
splits (`--split test`) run once, at the end of an issue, with `--final`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.suite import (BASELINE_DECLINE, BASELINE_K, FIGURES, KINDS, Split, baseline_message,  # noqa: E402
                              cell, figures, load_splits, outcome)
from docbot import ConfigurableDocBot, Conversation  # noqa: E402
from docbot.providers import Provider  # noqa: E402
from docbot.rag.evidence import says_not_in_sources  # noqa: E402

PIPELINES = ("docbot", "baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="store_true", help="every domain of the suite")
    parser.add_argument("--domains", default=None, help="only these domains, comma-separated")
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    parser.add_argument("--final", action="store_true", help="allow the sealed test splits (run them once)")
    parser.add_argument("--full", action="store_true", help="every question of the split, not the seeded sample")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help="docbot, baseline or both")
    parser.add_argument("--provider", default="llamacpp")
    parser.add_argument("--model", default=None, help="default: the config's answer model")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=None, help="relevance threshold (default: config)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the config's)")
    parser.add_argument("--context-chars", type=int, default=None, help="characters kept per block (default: config)")
    parser.add_argument("--judge", default=None, metavar="FOLDER", help="decide with this learned judge")
    parser.add_argument("--judge-threshold", type=float, default=None, help="its threshold (default: config)")
    parser.add_argument("--lora", default=None, help="a GGUF LoRA over the answer model (scripts/train_reader.py)")
    parser.add_argument("--out", default=None, help="write every reply to this JSON file")
    args = parser.parse_args()
    if not args.suite and not args.domains:
        parser.error("name --domains, or run the whole --suite")
    if args.split == "test" and not args.final:
        parser.error("the sealed test splits run once, at the end of an issue: add --final to run them")
    pipelines = args.pipelines.split(",")
    if not set(pipelines) <= set(PIPELINES):
        parser.error(f"--pipelines: choose among {', '.join(PIPELINES)}")
    overrides = {k: v for k, v in (("top_k", args.top_k), ("relevance_threshold", args.threshold),
                                   ("n_threads", args.threads), ("context_chars", args.context_chars),
                                   ("judge", args.judge), ("judge_threshold", args.judge_threshold),
                                   ("answer_lora", args.lora))
                 if v is not None}
    splits = load_splits(args.split, args.domains.split(",") if args.domains else None, sampled=not args.full)
    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="docbot-suite-") as index_dir:
        bot = ConfigurableDocBot(provider=args.provider, model=args.model, index_dir=index_dir,
                                 models_dir=str(ROOT / "models"), **overrides)
        print(f"model {bot.provider}; {args.split} split, {sum(len(s.questions) for s in splits)} questions and "
              f"{sum(len(s.pairs) for s in splits)} pairs in {len(splits)} domains; top_k {bot.config.top_k}, "
              f"threshold {bot.config.relevance_threshold}, context_chars {bot.config.context_chars}, "
              f"judge {bot.config.judge_threshold if bot.config.judge else 'off'}, "
              f"LoRA {bot.config.answer_lora or 'none'}",
              file=sys.stderr, flush=True)
        for split in splits:
            rows += run_split(bot, split, pipelines)
    print(f"{len(rows)} replies in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print_tables(rows, splits, pipelines)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")


def run_split(bot: ConfigurableDocBot, split: Split, pipelines: list[str],
              model: Provider | None = None) -> list[dict]:
    """Every question and pair of `split` through each pipeline, as scored rows; `model` answers in place of the
    bot's own provider."""
    bot.load_domain(split.domain, split.documents, progress=False)
    asks = {"docbot": (partial(ask_docbot, model=model), lambda: Conversation(bot.config.history_turns)),
            "baseline": (partial(ask_baseline, model=model), list)}
    rows = []
    with tqdm(total=(len(split.questions) + 2 * len(split.pairs)) * len(pipelines), desc=split.domain,
              file=sys.stderr) as bar:
        for name in pipelines:
            ask, new_chat = asks[name]
            for q in split.questions:
                rows.append(scored(split, name, q.id, q.question, q.gold, ask(bot, q.question, new_chat()),
                                   pair=False))
                bar.update()
            for p in split.pairs:
                chat = new_chat()
                ask(bot, p.first, chat)
                rows.append(scored(split, name, p.id, f"{p.first} | {p.then}", p.gold, ask(bot, p.then, chat),
                                   pair=True))
                bar.update(2)
    return rows


def scored(split: Split, pipeline: str, id_: str, question: str, gold, reply: dict, pair: bool) -> dict:
    return {"domain": split.domain, "kind": split.kind, "pipeline": pipeline, "id": id_, "question": question,
            "gold": [list(answer) for answer in gold], "pair": pair, **reply,
            "shown": outcome(reply["text"], reply["declined"], gold),
            "raw": outcome(reply["raw_text"], reply["raw_declined"], gold)}


def ask_docbot(bot: ConfigurableDocBot, question: str, chat: Conversation, model: Provider | None = None) -> dict:
    """docbot's own answer path, streamed: the text shown, and the model's own text (empty when it was not asked)."""
    t = time.perf_counter()
    answer, first = bot.ask(question, stream=True, conversation=chat, model=model), None
    for piece in answer:
        if first is None and piece.strip():
            first = time.perf_counter() - t
    raw = answer.guard.raw
    return {"text": answer.text.strip(), "declined": not answer.covered, "raw_text": raw.strip(),
            "raw_declined": not raw.strip() or says_not_in_sources(raw), "guard": answer.guard.fired,
            "sources": [s.file for s in answer.sources], "first_s": first, "whole_s": time.perf_counter() - t}


def ask_baseline(bot: ConfigurableDocBot, question: str, chat: list[dict], model: Provider | None = None) -> dict:
    """The fair plain baseline: the top `BASELINE_K` blocks of docbot's retrieval for the question as typed, one
    user message after the conversation's earlier messages (`chat`, extended here), nothing checked or replaced."""
    t = time.perf_counter()
    blocks = bot.retrieve(question, BASELINE_K)
    messages = [*chat, baseline_message(question, [b.text for b in blocks])]
    parts, first = [], None
    for piece in (model or bot.provider).stream(messages, bot.config.max_new_tokens):
        if first is None and piece.strip():
            first = time.perf_counter() - t
        parts.append(piece)
    reply = "".join(parts).strip()
    chat += [messages[-1], {"role": "assistant", "content": reply}]
    declined = BASELINE_DECLINE in reply
    return {"text": reply, "declined": declined, "raw_text": reply, "raw_declined": declined,
            "guard": None, "sources": [b.file for b in blocks],
            "first_s": first, "whole_s": time.perf_counter() - t}


def print_tables(rows: list[dict], splits: list[Split], pipelines: list[str]) -> None:
    """One table per view: a row per domain and pipeline, then the pooled rows of each kind of domain."""
    groups = [(s.domain, [r for r in rows if r["domain"] == s.domain]) for s in splits]
    groups += [(f"{kind} (pooled)", [r for r in rows if r["kind"] == kind]) for kind in KINDS
               if any(s.kind == kind for s in splits)]
    for view, title in (("shown", "the text shown"), ("raw", "the model's own text")):
        print(f"\nScored on {title} (count/of, share [95% interval]):")
        header = ["domain", "pipeline", *FIGURES, "first text p50", "whole p50"]
        table = [header]
        for name, group in groups:
            for pipeline in pipelines:
                mine = [r for r in group if r["pipeline"] == pipeline]
                counts = figures(mine, view)
                table.append([name, pipeline, *(cell(*counts[f]) for f in FIGURES),
                              _median(r["first_s"] for r in mine), _median(r["whole_s"] for r in mine)])
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            print("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip())


def _median(values) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.2f} s" if values else "-"


if __name__ == "__main__":
    main()
