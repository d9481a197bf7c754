"""Fine-tuning, the public side: training data from documents, its validation, and the Colab notebook.

    python fine_tuning.py validate FILE [FILE ...]   # every problem as file:line: reason; exit 1 if any

Library use: `ConfigurableDocBot.prepare_fine_tuning_data()` writes the data and the notebook;
`validate_file(path)` checks a JSONL file against its format (the guide's `json.load` cannot read JSONL);
`train_lora(bot)` trains a LoRA adapter on this machine and registers it in `models/`;
`evaluate(bot)` measures whether it helped (base vs fine-tuned, with and without retrieval).
"""

from __future__ import annotations

import argparse
import sys

from docbot.tuning.datasets import FORMATS, validate_jsonl

__all__ = ["FORMATS", "prepare_fine_tuning_data", "train_lora", "evaluate", "validate_file", "main"]


def prepare_fine_tuning_data(bot, **kwargs) -> dict[str, str]:
    """Same as `bot.prepare_fine_tuning_data(**kwargs)`: data files, card, bundle zip and notebook."""
    return bot.prepare_fine_tuning_data(**kwargs)


def train_lora(bot, **kwargs):
    """Same as `bot.train(**kwargs)`: LoRA on the newest prepared data, registered as the next version."""
    return bot.train(**kwargs)


def evaluate(bot, questions=None, **kwargs):
    """Same as `bot.evaluate(questions, **kwargs)`: the four arms on held-out questions; returns the report
    (`print(report.table())`) written to `evaluations/<stamp>/report.json` with `chart.png`."""
    return bot.evaluate(questions, **kwargs)


def validate_file(path: str, fmt: str | None = None) -> list[str]:
    """Problems in a JSONL training file as 'file:line: reason'; the format comes from the name if not given."""
    return validate_jsonl(path, fmt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fine_tuning.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="check JSONL training files")
    check.add_argument("files", nargs="+")
    check.add_argument("--format", choices=FORMATS, help="default: from the file name, else from each line's keys")
    args = parser.parse_args(argv)
    bad = 0
    for path in args.files:
        problems = validate_file(path, args.format)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
