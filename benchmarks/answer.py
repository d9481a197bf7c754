"""Answer speed and memory, runtime against runtime: the same questions through docbot's own answer path.

    python benchmarks/answer.py [-n 6] [--set eval_sets/medical_dev.jsonl] [--threads N]

Each configuration runs in its own process (so its peak memory is its own), on the first `-n` answerable questions
of the set, each asked afresh with `bot.ask(q, stream=True)`:
- load: building the provider (a packaged model is joined or converted first, untimed);
- first text: from the call (search, prompt, prefill, guards) to the first text shown to the user;
- whole answer: from the call to the last piece;
- peak memory: the process's maximum resident set size.
Configurations: the default (Qwen2.5-Coder-0.5B on llama.cpp), the same model de-quantized on transformers, SmolLM2
on both runtimes, the old default (SmolLM2 on transformers, one whole block) and the optional Qwen2.5-Coder-1.5B on
llama.cpp (`scripts/setup.sh --larger-model`). The ratios compare the runtimes on the same model, and the larger
model with the default.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN, SMOL, LARGER = "Qwen2.5-Coder-0.5B-Instruct", "SmolLM2-135M-Instruct", "Qwen2.5-Coder-1.5B-Instruct"
CONFIGS = {  # name -> (provider, model, overrides)
    "default: Qwen-0.5B on llama.cpp": ("llamacpp", QWEN, {}),
    "Qwen-0.5B on transformers": ("transformers", QWEN, {}),
    "SmolLM2 on llama.cpp": ("llamacpp", SMOL, {}),
    "SmolLM2 on transformers": ("transformers", SMOL, {}),
    "old default: SmolLM2, transformers, one whole block": ("transformers", SMOL, {"top_k": 1, "context_chars": 0}),
    "optional: Qwen-1.5B on llama.cpp": ("llamacpp", LARGER, {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=str(ROOT / "eval_sets" / "medical_dev.jsonl"))
    parser.add_argument("--domain", default="medical")
    parser.add_argument("-n", type=int, default=6, help="how many answerable questions (the first n of the set)")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: the config's)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: run one configuration
    args = parser.parse_args()
    if args.one:
        return run_one(args)
    rows = {}
    for name in CONFIGS:
        done = subprocess.run([sys.executable, __file__, "--one", name, "-n", str(args.n), "--set", args.set,
                               "--domain", args.domain, "--threads", str(args.threads)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}")
            continue
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"\n{'configuration':<46} {'load s':>7} {'first text p50 s':>17} {'whole p50 s':>12} "
          f"{'whole sum s':>12} {'peak MB':>8}")
    for name, r in rows.items():
        print(f"{name:<46} {r['load']:>7.2f} {statistics.median(r['first']):>17.2f} "
              f"{statistics.median(r['whole']):>12.2f} {sum(r['whole']):>12.1f} {r['peak_mb']:>8.0f}")
    default = "default: Qwen-0.5B on llama.cpp"
    pairs = [(default, "Qwen-0.5B on transformers"), ("SmolLM2 on llama.cpp", "SmolLM2 on transformers"),
             (default, "old default: SmolLM2, transformers, one whole block"),
             (default, "optional: Qwen-1.5B on llama.cpp")]
    for base, other in pairs:
        if base in rows and other in rows:
            print(f"whole answers, {other} / {base}: {sum(rows[other]['whole']) / sum(rows[base]['whole']):.2f}x")


def run_one(args) -> None:
    from docbot import ConfigurableDocBot, Conversation
    from docbot.providers import resolve_base_model, resolve_gguf
    from docbot.tuning.scoring import load_questions

    provider, model, overrides = CONFIGS[args.one]
    if args.threads:
        overrides = {**overrides, "n_threads": args.threads}
    models_dir = ROOT / "models"
    (resolve_gguf if provider == "llamacpp" else resolve_base_model)(model, models_dir)  # untimed: once per machine
    questions = [q for q in load_questions(args.set) if q.answer is not None][:args.n]
    with tempfile.TemporaryDirectory(prefix="docbot-answer-") as index_dir:
        bot = ConfigurableDocBot(provider=provider, model=model, index_dir=index_dir, models_dir=str(models_dir),
                                 documents_dir=str(ROOT / "Documents"), **overrides)
        bot.load_domain(args.domain, progress=False)
        t = time.perf_counter()
        bot.provider
        load = time.perf_counter() - t
        first, whole = [], []
        for q in questions:
            t0, first_at = time.perf_counter(), None
            for _ in bot.ask(q.question, stream=True, conversation=Conversation(0)):
                first_at = first_at or time.perf_counter()
            whole.append(time.perf_counter() - t0)
            first.append((first_at or time.perf_counter()) - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load": load, "first": first, "whole": whole, "peak_mb": peak}))


if __name__ == "__main__":
    main()
