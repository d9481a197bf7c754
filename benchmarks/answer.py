"""Answer latency of the in-process model: load time, time to first token and tokens/s on the Medical domain.

    python benchmarks/answer.py [--set eval_sets/medical_dev.jsonl] [-n 5] [--domain medical]

The model is the packaged SmolLM2-135M-Instruct, from its converted folder under models/ (converted first, untimed,
if missing). Load time: building the provider with the loader's cache cleared (tokenizer + fp32 weights from disk).
Then, for the first `-n` questions of the set, each asked afresh (no conversation history) with
`bot.ask(q, stream=True)`: time to first token is from the call (retrieval, prompt, prefill) to the first streamed
text; tokens are counted with the model's own tokenizer over the streamed text; tokens/s is the decoding rate after
the first piece of text arrived. Medians are printed last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=str(ROOT / "eval_sets" / "medical_dev.jsonl"))
    parser.add_argument("--domain", default="medical")
    parser.add_argument("-n", type=int, default=5, help="how many questions (the first n of the set)")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from docbot.providers.base_models import resolve_base_model
    from docbot.bot import ConfigurableDocBot
    from docbot.tuning.scoring import load_questions

    hf_logging.disable_progress_bar()
    models_dir = ROOT / "models"
    location = resolve_base_model("SmolLM2-135M-Instruct", models_dir)  # converts once if needed, untimed
    questions = [q for q in load_questions(args.set)][: args.n]
    with tempfile.TemporaryDirectory(prefix="docbot-answer-") as index_dir:
        bot = ConfigurableDocBot(provider="transformers", index_dir=index_dir, models_dir=str(models_dir),
                                 documents_dir=str(ROOT / "Documents"))
        report = bot.load_domain(args.domain, progress=False)

        t0 = time.perf_counter()
        provider = bot.provider
        load_s = time.perf_counter() - t0
        tokenizer = provider.tokenizer
        print(f"model: {provider.model} from {location}; torch threads {torch.get_num_threads()}, "
              f"{os.cpu_count()} CPUs")
        print(f"domain: {report}")
        print(f"model load: {load_s:.2f} s")
        print()
        print(f"{'question':<58} {'first token s':>13} {'tokens':>6} {'total s':>8} {'tokens/s':>8}")
        rows = []
        for q in questions:
            bot.reset()
            pieces, first_at = [], None
            t0 = time.perf_counter()
            for piece in bot.ask(q.question, stream=True):
                if first_at is None:
                    first_at = time.perf_counter()
                pieces.append(piece)
            end = time.perf_counter()
            if first_at is None:
                print(f"{q.question[:58]:<58} (no answer streamed)")
                continue
            n_tokens = len(tokenizer("".join(pieces), add_special_tokens=False)["input_ids"])
            first_tokens = len(tokenizer(pieces[0], add_special_tokens=False)["input_ids"])
            rate = (n_tokens - first_tokens) / (end - first_at) if end > first_at else float("nan")
            rows.append((first_at - t0, n_tokens, end - t0, rate))
            print(f"{q.question[:58]:<58} {first_at - t0:>13.3f} {n_tokens:>6} {end - t0:>8.2f} {rate:>8.1f}")
        if rows:
            print()
            print(f"medians over {len(rows)} questions: time to first token {statistics.median(r[0] for r in rows):.3f} s, "
                  f"{statistics.median(r[1] for r in rows):.0f} tokens per answer, "
                  f"{statistics.median(r[3] for r in rows):.1f} tokens/s; model load {load_s:.2f} s")


if __name__ == "__main__":
    main()
