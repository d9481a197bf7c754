"""What each rule of the answer path is worth: the suite's dev questions answered with the whole `AnswerPolicy`,
then with each rule switched off, in one process.

    python benchmarks/ablation.py [--domains git,medical] [--full] [--rules decline_below,echoes+swap_margin]
                                  [--replies FILE] [--out FILE]

The score of a set of questions is answered + unanswerable declined - wrongly declined - wrong facts (each question
counts +1 or -1; pairs are not scored). A rule pays when switching it off lowers the pooled score by more than one
standard error of the paired difference, and raises no kind of domain's score by more than its own standard error.
The model's replies are kept by prompt (decoding is greedy), so a rule that changes only what is shown costs no
generation; only the prompts it changes are generated, and `--replies` keeps them in a file for the next run.
`a+b` switches rules a and b off together. `relevance_threshold` is the config's first gate, switched off as -1
(every retrieved block counts).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.answer_quality import run_split  # noqa: E402
from benchmarks.suite import KINDS, load_splits  # noqa: E402
from docbot import ConfigurableDocBot  # noqa: E402
from docbot.files import write_json_atomic  # noqa: E402
from docbot.providers import Messages, Provider  # noqa: E402
from docbot.rag.policy import AnswerPolicy  # noqa: E402

GATE = "relevance_threshold"
POINTS = {"answered": 1, "declined": 1, "wrongly declined": -1, "wrong fact": -1}


class Replaying(Provider):
    """A provider whose replies are kept by prompt: asked again, it gives the same pieces without generating."""

    def __init__(self, provider: Provider, kept: dict[str, list[str]] | None = None) -> None:
        self.provider, self.name, self.model = provider, provider.name, provider.model
        self.kept = kept if kept is not None else {}
        self.generated = 0

    def stream(self, messages: Messages, max_new_tokens: int) -> Iterator[str]:
        key = json.dumps([str(self.provider), messages, max_new_tokens])
        if key not in self.kept:
            self.kept[key] = list(self.provider.stream(messages, max_new_tokens))
            self.generated += 1
        yield from self.kept[key]


def points(rows: list[dict]) -> dict[tuple[str, str], int]:
    """Each scored question's +1 or -1 on the text shown, by (domain, id)."""
    return {(r["domain"], r["id"]): POINTS[r["shown"]] for r in rows if not r["pair"]}


def difference(whole: dict, ablated: dict, keys: list) -> tuple[int, float]:
    """The score with the rule off minus with it on, over `keys`, and the paired difference's standard error."""
    d = [ablated[k] - whole[k] for k in keys]
    if not d:
        return 0, 0.0
    mean = sum(d) / len(d)
    return sum(d), math.sqrt(len(d) * sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", default=None, help="only these domains, comma-separated (default: all)")
    parser.add_argument("--full", action="store_true", help="every question of the dev split, not the sample")
    parser.add_argument("--rules", default=",".join([GATE, *AnswerPolicy.rules()]), help="rules to switch off")
    parser.add_argument("--without", default="", help="rules already off in every run (a+b), the reference too")
    parser.add_argument("--replies", type=Path, default=None, help="keep the model's replies in this JSON file")
    parser.add_argument("--out", default=None, help="write every run's rows to this JSON file")
    args = parser.parse_args()
    rules = args.rules.split(",")
    splits = load_splits("dev", args.domains.split(",") if args.domains else None, sampled=not args.full)
    started, runs = time.perf_counter(), {}
    with tempfile.TemporaryDirectory(prefix="docbot-ablation-") as index_dir:
        bot = ConfigurableDocBot(index_dir=index_dir, models_dir=str(ROOT / "models"))
        kept = json.loads(args.replies.read_text(encoding="utf-8")) if args.replies and args.replies.is_file() else {}
        model, config = Replaying(bot.provider, kept), bot.config
        for rule in ["none", *rules]:
            off = set(rule.split("+") + args.without.split("+")) - {"none", ""}
            bot.policy = AnswerPolicy().without(*off - {GATE})
            bot.config = config.replace(relevance_threshold=-1.0) if GATE in off else config
            runs[rule] = [row for split in splits for row in run_split(bot, split, ["docbot"], model)]
            print(f"{rule}: {model.generated} generations so far, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)
    whole = points(runs["none"])
    kinds = [k for k in KINDS if any(s.kind == k for s in splits)]
    by_kind = {kind: [(s.domain, q.id) for s in splits if s.kind == kind for q in s.questions] for kind in kinds}
    but = f" but {args.without}" if args.without else ""
    print(f"\nScore with every rule{but}: {sum(whole.values())} over {len(whole)} questions "
          f"({', '.join(f'{k} {sum(whole[q] for q in by_kind[k])}/{len(by_kind[k])}' for k in kinds)}).")
    print("Change in score with the rule switched off (difference ± one standard error):\n")
    print("| rule off | " + " | ".join(kinds) + " | pooled | pays |")
    print("|---" * (len(kinds) + 3) + "|")
    for rule in rules:
        ablated = points(runs[rule])
        cells = [difference(whole, ablated, by_kind[k]) for k in kinds]
        total, error = difference(whole, ablated, list(whole))
        pays = -total > error and all(d <= e for d, e in cells)
        print(f"| {rule} | " + " | ".join(f"{d:+d} ± {e:.1f}" for d, e in cells) +
              f" | {total:+d} ± {error:.1f} | {'yes' if pays else 'no'} |")
    print(f"\n{model.generated} generations in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.replies:
        write_json_atomic(args.replies, model.kept)
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
