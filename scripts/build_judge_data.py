#!/usr/bin/env python3
"""Build the judge's training pairs (question, passage, does the passage answer it?) from pinned SQuAD pages.

    python3 scripts/build_judge_data.py --repo PATH [--out build/judge_data] [--v1-articles 0] [--per-article 12]

PATH is a git directory of rajpurkar/SQuAD-explorer. Two sources, both read with `git show` at a pinned commit:
- the SQuAD 2.0 articles that `eval_sets/squad_allowlist.json` keeps for training: each answerable question with its
  paragraph (label 1) and with a paragraph that lacks every gold answer (label 0: of its article, mostly the one
  nearest it in words, or of another article), each adversarial unanswerable question with its own paragraph (0);
- SQuAD 1.1 train articles (answerable only): a seeded sample of `--per-article` questions of each, with its
  paragraph (1) and with a paragraph lacking its answer (0), chosen the same way.
Reserved titles and the suite's dev and test articles are never read. Articles are split into train and valid
(`--valid-share`, seeded) so the trainer can report its accuracy on articles it did not see. Writes `train.jsonl`,
`valid.jsonl` and `manifest.json` (sources, commits, articles, seed, counts, sha256 of each file).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.suite import normalize  # noqa: E402
from docbot.files import sha256_file, write_bytes_atomic, write_json_atomic  # noqa: E402
from scripts.build_suite import ALLOWLIST, read_page, squad_split  # noqa: E402

V1 = {"repository": "rajpurkar/SQuAD-explorer", "commit": "13f82e35b9a1fb9173f863b35f5675030646571e",
      "path": "explore/1.0/train/{article}.html", "licence": "CC BY-SA 4.0 (SQuAD 1.1, Rajpurkar et al., 2016)"}
SEED = 20261206


def forbidden(allowlist: dict) -> set[str]:
    """Titles no judge data may come from: the reserved ones and the suite's dev and test articles."""
    return set(allowlist["reserved"]) | set(allowlist["dev"]) | set(allowlist["test"])


def v1_titles(repo: Path, commit: str) -> list[str]:
    """The SQuAD 1.1 train articles at `commit`, sorted."""
    listing = subprocess.run(["git", "--git-dir", str(repo), "ls-tree", "--name-only", f"{commit}:explore/1.0/train"],
                             check=True, capture_output=True, text=True).stdout.split()
    return sorted(name.removesuffix(".html") for name in listing if name.endswith(".html"))


def _words(text: str) -> set[str]:
    return set(normalize(text).split())


def _negative(question: dict, paragraphs: list[str], normalized: list[str], elsewhere: list[str],
              rng: random.Random) -> tuple[str, str] | None:
    """A passage that does not answer the question, and its kind: half the time the paragraph of its article
    sharing most words with it among those holding none of its answers (hard), a quarter another such paragraph
    (topical), a quarter a paragraph of another article (easy). With hard negatives alone the loss did not move
    from 0.69 in 100 steps: a cross-encoder needs easy contrasts to start learning."""
    golds = [normalize(a) for a in question["answers"]]
    others = [i for i in range(len(paragraphs))
              if i != question["paragraph"] and not any(g.strip() and g in normalized[i] for g in golds)]
    draw = rng.random()
    if draw < 0.25 and elsewhere:
        return rng.choice(elsewhere), "other article"
    if not others:
        return None
    if draw < 0.5:
        return paragraphs[rng.choice(others)], "same article"
    asked = _words(question["question"])
    return paragraphs[max(others, key=lambda i: (len(asked & _words(paragraphs[i])), -i))], "nearest in article"


def article_pairs(page, title: str, source: str, questions: list[dict], elsewhere: list[str],
                  rng: random.Random) -> list[dict]:
    """Labelled pairs of one article's `questions` (see the module docstring); `elsewhere` holds paragraphs of
    other articles."""
    normalized = [normalize(p) for p in page.paragraphs]
    rows = []
    for q in questions:
        own = page.paragraphs[q["paragraph"]]
        if q["unanswerable"]:
            rows.append({"question": q["question"], "passage": own, "label": 0, "kind": "adversarial"})
            continue
        if not any(normalize(a).strip() and normalize(a) in normalized[q["paragraph"]] for a in q["answers"]):
            continue  # a gold span cut inside a word: no sure positive
        rows.append({"question": q["question"], "passage": own, "label": 1, "kind": "answers"})
        negative = _negative(q, page.paragraphs, normalized, elsewhere, rng)
        if negative is not None:
            rows.append({"question": q["question"], "passage": negative[0], "label": 0, "kind": negative[1]})
    for row in rows:
        row.update(article=title, source=source)
    return rows


def build(repo: Path, out: Path, v1_articles: int, per_article: int, valid_share: float, seed: int,
          v1_commit: str = V1["commit"], v2_commit: str | None = None) -> dict:
    """Write the pairs and the manifest under `out` and return the manifest; the commits default to the pinned
    ones (the allowlist's for SQuAD 2.0)."""
    allowlist = json.loads(ALLOWLIST.read_text(encoding="utf-8"))
    split = squad_split(allowlist)
    barred = forbidden(allowlist)
    rng = random.Random(seed)
    v2 = {**allowlist["source"], **({"commit": v2_commit} if v2_commit else {})}
    for title in split["train"]:
        if title in barred:
            sys.exit(f"{ALLOWLIST}: {title} is reserved or in the suite's dev/test split; it cannot train the judge")
    titles = [t for t in v1_titles(repo, v1_commit) if t not in barred and t not in split["train"]]
    rng.shuffle(titles)
    chosen = titles if v1_articles <= 0 else titles[:v1_articles]
    pages = {title: read_page(repo, v2["commit"], v2["path"].format(article=title)) for title in split["train"]}
    pages |= {title: read_page(repo, v1_commit, V1["path"].format(article=title)) for title in chosen}
    rows_by_article: dict[str, list[dict]] = {}
    for title, page in pages.items():
        elsewhere = [p for other in rng.sample(sorted(pages), min(4, len(pages))) if other != title
                     for p in pages[other].paragraphs]
        if title in split["train"]:
            rows_by_article[title] = article_pairs(page, title, "squad-2.0", page.questions, elsewhere, rng)
        else:
            questions = [q for q in page.questions if not q["unanswerable"]]
            rows_by_article[title] = article_pairs(page, title, "squad-1.1",
                                                   rng.sample(questions, min(per_article, len(questions))),
                                                   elsewhere, rng)
    order = sorted(rows_by_article)
    rng.shuffle(order)
    n_valid = max(1, round(len(order) * valid_share)) if len(order) > 1 else 0
    parts = {"valid": sorted(order[:n_valid]), "train": sorted(order[n_valid:])}
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"about": "Judge training pairs: does the passage answer the question? Built by "
                         "scripts/build_judge_data.py; SQuAD is CC BY-SA 4.0.",
                "sources": {"squad-2.0": {**v2, "articles": split["train"]},
                            "squad-1.1": {**V1, "commit": v1_commit, "articles": sorted(chosen)}},
                "seed": seed, "per_article": per_article, "valid_share": valid_share, "files": {}}
    for part, articles in parts.items():
        rows = [row for title in articles for row in rows_by_article[title]]
        rng.shuffle(rows)
        path = out / f"{part}.jsonl"
        write_bytes_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
        counts = Counter(f"{r['source']} {r['kind']}" for r in rows)
        manifest["files"][path.name] = {"articles": articles, "pairs": len(rows),
                                        "positive": sum(r["label"] for r in rows),
                                        "counts": dict(sorted(counts.items())), "sha256": sha256_file(path)}
        print(f"{part}: {len(rows):,} pairs from {len(articles)} articles ({dict(counts)})", file=sys.stderr)
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of rajpurkar/SQuAD-explorer")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "judge_data")
    parser.add_argument("--v1-articles", type=int, default=0, help="SQuAD 1.1 train articles to read (0: all)")
    parser.add_argument("--per-article", type=int, default=12, help="questions sampled from each SQuAD 1.1 article")
    parser.add_argument("--valid-share", type=float, default=0.05, help="share of articles held out for validation")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    build(args.repo, args.out, args.v1_articles, args.per_article, args.valid_share, args.seed)


if __name__ == "__main__":
    main()
