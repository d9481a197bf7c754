#!/usr/bin/env python3
"""Train the grounded reader: a LoRA for the answer model that answers from the blocks or replies the decline.

    python3 scripts/train_reader.py --repo PATH [--data build/judge_data] [--out build/reader] [--examples 800]

PATH is a git directory of rajpurkar/SQuAD-explorer. The articles are the judge's (`scripts/build_judge_data.py`'s
manifest: its train articles train, its valid articles validate), read at the same pinned commits, so reserved and
evaluation articles stay out. Each example is the prompt docbot builds when it answers (`build_messages`, `top_k`
paragraphs cut to the `context_chars` characters nearest the question, as the answer path cuts them) and, as the
reply, the sentence that holds the gold answer, or the decline reply: for SQuAD 2.0's unanswerable questions, and
for answerable ones asked with paragraphs of their article that lack the answer. It trains with docbot's own
`train_lora` on the packaged base model, converts the adapter to a GGUF LoRA for llama.cpp and writes a manifest.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.suite import normalize  # noqa: E402
from docbot.config import Config  # noqa: E402
from docbot.files import read_json, sha256_file, write_bytes_atomic, write_json_atomic  # noqa: E402
from docbot.providers.base_models import resolve_base_model  # noqa: E402
from docbot.rag.context import select_context  # noqa: E402
from docbot.rag.embeddings import Embedder  # noqa: E402
from docbot.rag.text import split_sentences  # noqa: E402
from docbot.rag.prompts import DECLINE_REPLY, build_messages  # noqa: E402
from docbot.tuning.export import export_lora_gguf  # noqa: E402
from docbot.tuning.training import train_lora  # noqa: E402
from scripts.build_judge_data import SEED  # noqa: E402
from scripts.build_suite import read_page  # noqa: E402

DECLINE_SHARE = 0.25  # of answerable questions, asked with paragraphs that lack the answer
LORA = "reader_lora.gguf"  # the adapter as llama.cpp applies it (config answer_lora)
V2_WEIGHT = 6  # questions read from a SQuAD 2.0 article per one of a SQuAD 1.1 one: they hold the adversarial ones


def examples(repo: Path, sources: dict, articles: list[str], per_article: int, limit: int, blocks: int,
             context_chars: int, embed, rng: random.Random) -> list[dict]:
    """Up to `limit` chat examples: the SQuAD 2.0 articles' first, then SQuAD 1.1 articles in a seeded order."""
    v2 = [t for t in articles if t in sources["squad-2.0"]["articles"]]
    v1 = sorted(set(articles) - set(v2))
    rng.shuffle(v1)
    rows: list[dict] = []
    for title in v2 + v1:
        if len(rows) >= limit:
            break
        source = sources["squad-2.0" if title in v2 else "squad-1.1"]
        page = read_page(repo, source["commit"], source["path"].format(article=title))
        normalized = [normalize(p) for p in page.paragraphs]
        for q in rng.sample(page.questions, min(per_article * (V2_WEIGHT if title in v2 else 1),
                                                len(page.questions))):
            golds = [g for g in (normalize(a) for a in q["answers"]) if g.strip()]
            lacking = [i for i, text in enumerate(normalized)
                       if i != q["paragraph"] and not any(g in text for g in golds)]
            kind = ("unanswerable" if q["unanswerable"]
                    else "answer absent" if rng.random() < DECLINE_SHARE else "answer")
            chosen = rng.sample(lacking, min(blocks if kind == "answer absent" else blocks - 1, len(lacking)))
            if kind != "answer absent":
                chosen.append(q["paragraph"])
            if not chosen:
                continue
            rng.shuffle(chosen)
            context = select_context(q["question"], [("", page.paragraphs[i]) for i in chosen], context_chars,
                                     embed)
            if kind == "answer":
                holding = [s for _, text in context for s in split_sentences(text)
                           if any(g in normalize(s) for g in golds)]
                if not holding:
                    continue  # the cut dropped the sentence that answers: no sure target
                reply = holding[0]
            else:
                reply = DECLINE_REPLY
            rows.append({"messages": [*build_messages(q["question"], context),
                                      {"role": "assistant", "content": reply}], "kind": kind})
    rows = rows[:limit]
    rng.shuffle(rows)
    return rows


def train(repo: Path, data: Path, out: Path, *, examples_n: int, per_article: int, max_steps: int, seed: int,
          config: Config) -> dict:
    """Write the examples, the adapter, its GGUF LoRA and the manifest under `out`, and return the manifest."""
    manifest = read_json(data / "manifest.json", "build it with scripts/build_judge_data.py")
    rng = random.Random(seed)
    embed = Embedder(config.embedding_model).embed
    out.mkdir(parents=True, exist_ok=True)
    files, counts = {}, {}
    for part, source, limit in (("train", "train.jsonl", examples_n),
                                ("validation", "valid.jsonl", max(8, examples_n // 20))):
        rows = examples(repo, manifest["sources"], manifest["files"][source]["articles"], per_article, limit,
                        config.top_k, config.context_chars, embed, rng)
        files[part] = out / f"{part}.jsonl"
        write_bytes_atomic(files[part], "".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n"
                                                for r in rows).encode("utf-8"))
        counts[part] = dict(sorted(Counter(r["kind"] for r in rows).items()))
        print(f"{part}: {len(rows)} examples {counts[part]}", file=sys.stderr, flush=True)
    location = resolve_base_model(config.base_model, config.models_dir)
    trained = train_lora(files["train"], files["validation"], location, out, base_model_name=config.base_model,
                         base_fingerprint=None, card_sha256=None, learning_rate=config.learning_rate,
                         batch_size=config.batch_size, num_epochs=1, lora_rank=config.lora_rank,
                         lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                         lora_target_modules=config.lora_target_modules, max_seq_length=config.max_seq_length,
                         max_steps=max_steps, seed=seed, resume=False)
    lora = export_lora_gguf(out / "adapter", location, out / LORA)
    result = {"about": "The grounded reader: a LoRA over the answer model, built by scripts/train_reader.py from "
                       "SQuAD (CC BY-SA 4.0) articles of the judge's data.",
              "base_model": config.base_model, "judge_data": manifest["sources"], "seed": seed, "counts": counts,
              "training": trained["training"], "losses": trained["losses"],
              "files": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                        for p in (files["train"], files["validation"], lora)}}
    write_json_atomic(out / "manifest.json", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of rajpurkar/SQuAD-explorer")
    parser.add_argument("--data", type=Path, default=ROOT / "build" / "judge_data", help="the judge's data")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "reader")
    parser.add_argument("--examples", type=int, default=800, help="training examples (a seeded sample)")
    parser.add_argument("--per-article", type=int, default=3, help="questions read from a SQuAD 1.1 article")
    parser.add_argument("--max-steps", type=int, default=-1, help="cap the optimizer steps (-1: one epoch)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    result = train(args.repo, args.data, args.out, examples_n=args.examples, per_article=args.per_article,
                   max_steps=args.max_steps, seed=args.seed, config=Config())
    print(json.dumps({"losses": result["losses"], "training": result["training"]}), file=sys.stderr)


if __name__ == "__main__":
    main()
