"""The default answer model, chosen by the suite: each candidate through docbot's own answer path on the same dev
questions, in one process, so the time ratios compare like with like.

    python benchmarks/default_model.py [--models Qwen2.5-Coder-0.5B-Instruct,Qwen2.5-Coder-1.5B-Instruct]
                                       [--lora FILE] [--domains ...] [--full] [--out FILE]

The first model is the reference. `--lora` adds the first model with that GGUF LoRA over it (the grounded reader,
`scripts/train_reader.py`). Each arm gets the suite's tables (`answer_quality.print_tables`), then one line: the
ablation's score (answered + unanswerable declined - wrongly declined - wrong facts), its paired difference from
the reference with one standard error, and the median whole-answer time with its ratio to the reference's. The
default is the best arm whose whole-answer time is at most 2x the reference's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ablation import difference, points  # noqa: E402
from benchmarks.answer_quality import print_tables, run_split  # noqa: E402
from benchmarks.suite import load_splits  # noqa: E402
from docbot import ConfigurableDocBot  # noqa: E402

MODELS = "Qwen2.5-Coder-0.5B-Instruct,Qwen2.5-Coder-1.5B-Instruct"
MAX_RATIO = 2.0  # a default may take at most twice the reference's whole-answer time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS, help="packaged or local models, the reference first")
    parser.add_argument("--lora", default=None, help="also the reference model with this GGUF LoRA")
    parser.add_argument("--domains", default=None, help="only these domains, comma-separated (default: all)")
    parser.add_argument("--full", action="store_true", help="every question of the dev split, not the sample")
    parser.add_argument("--out", default=None, help="write every reply to this JSON file")
    args = parser.parse_args()
    models = args.models.split(",")
    arms = [(m, m, "") for m in models] + ([(f"{models[0]} + {Path(args.lora).name}", models[0], args.lora)]
                                           if args.lora else [])
    splits = load_splits("dev", args.domains.split(",") if args.domains else None, sampled=not args.full)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="docbot-models-") as index_dir:
        bot = ConfigurableDocBot(provider="llamacpp", index_dir=index_dir, models_dir=str(ROOT / "models"))
        base = bot.config
        for name, model, lora in arms:
            started = time.perf_counter()
            bot.config = base.replace(answer_lora=lora)
            bot.set_model("llamacpp", model)
            for split in splits:
                rows += [{**r, "pipeline": name} for r in run_split(bot, split, ["docbot"])]
            print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    names = [name for name, _, _ in arms]
    print_tables(rows, splits, names)
    of = {name: [r for r in rows if r["pipeline"] == name] for name in names}
    reference = points(of[names[0]])
    whole = {name: statistics.median(r["whole_s"] for r in of[name]) for name in names}
    print("\n| model | score | vs the reference | whole answer p50 | time ratio | may be the default |\n"
          "|---|---|---|---|---|---|")
    for name in names:
        score = points(of[name])
        diff, error = difference(reference, score, list(reference))
        ratio = whole[name] / whole[names[0]]
        print(f"| {name} | {sum(score.values())}/{len(score)} | {diff:+d} ± {error:.1f} | {whole[name]:.2f} s | "
              f"{ratio:.2f}x | {'yes' if ratio <= MAX_RATIO else 'no'} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
