"""Training data from the Medical sample: pairs kept and dropped per reason, and fact coverage.

    python benchmarks/data.py [--generator rules|llm]

Fact coverage: of the dev and test gold answers (`eval_sets/medical_{dev,test}.jsonl`) whose source document is
in the training split, the share that some training answer contains. The goal is >= 80%, with >= 150 distinct
grounded pairs.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=("rules", "llm"), default="rules")
    args = parser.parse_args()

    from docbot.bot import ConfigurableDocBot
    from docbot.tuning.finetuned import chat_files

    with tempfile.TemporaryDirectory(prefix="data_") as tmp:
        bot = ConfigurableDocBot(index_dir=f"{tmp}/index", models_dir=str(ROOT / "models"), data_dir=f"{tmp}/data")
        bot.load_domain("medical", ROOT / "Documents" / "Medical", progress=False)
        started = time.monotonic()
        files = bot.prepare_fine_tuning_data(formats=("chat",), generator=args.generator, progress=False)
        seconds = time.monotonic() - started
        card = json.loads(Path(files["card"]).read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in open(chat_files(Path(files["card"]))["train"], encoding="utf-8")]
    answers = [r["messages"][-1]["content"].lower() for r in rows]
    train_docs = {s["file"] for s in card["sources"] if s["split"] == "train"}
    gold = [json.loads(line) for name in ("dev", "test")
            for line in open(ROOT / "eval_sets" / f"medical_{name}.jsonl", encoding="utf-8")]
    gold = [g for g in gold if g.get("answer") and g.get("source") in train_docs]
    covered = [g for g in gold if any(g["answer"].lower() in a for a in answers)]
    print(f"generator {args.generator} ({bot.provider} for llm) in {seconds:.0f} s: kept {card['generator']['kept']}, "
          f"dropped {card['generator']['dropped']}")
    print(f"chat examples: {card['counts']['chat']}, of which decline examples {card['decline_examples']}")
    print(f"fact coverage: {len(covered)}/{len(gold)} = {len(covered) / max(len(gold), 1):.0%} of the dev and test "
          f"gold answers from the {len(train_docs)} training documents ({', '.join(sorted(train_docs))})")
    for g in gold:
        if g not in covered:
            print(f"  not covered: {g['question']!r} -> {g['answer']!r} ({g['source']})")


if __name__ == "__main__":
    main()
