#!/usr/bin/env python3
"""Rebuild the answer-quality suite's public documents and SQuAD questions from their pinned sources.

    python3 scripts/build_suite.py squad --repo PATH   # a clone (or mirror) of rajpurkar/SQuAD-explorer
    python3 scripts/build_suite.py git-doc [--from /usr/share/doc/git-doc]   # Debian's git-doc package

SQuAD 2.0 articles are read only through `eval_sets/squad_allowlist.json` (its dev and test articles; its train
articles belong to the judge's training data), at the commit it pins: each article's paragraphs become one text
file, its questions one JSONL file. git's manual pages (AsciiDoc sources) become plain text files. Everything is
written under `eval_sets/`; the hand-written questions are not touched.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.suite import normalize  # noqa: E402

EVAL = ROOT / "eval_sets"
ALLOWLIST = EVAL / "squad_allowlist.json"
GIT_PAGES = ("gittutorial", "giteveryday", "gitfaq", "gitignore", "git-stash", "git-bisect", "git-worktree",
             "git-cherry-pick", "git-tag", "git-revert", "git-clean", "git-restore", "git-reset", "git-switch",
             "git-reflog", "git-remote")


def squad_split(allowlist: dict) -> dict[str, list[str]]:
    """The allowlist's train/dev/test articles, checked against the seeded shuffle it records."""
    titles = sorted(allowlist["train"] + allowlist["dev"] + allowlist["test"])
    random.Random(allowlist["seed"]).shuffle(titles)
    n_train, n_dev = len(allowlist["train"]), len(allowlist["dev"])
    derived = {"train": titles[:n_train], "dev": titles[n_train:n_train + n_dev], "test": titles[n_train + n_dev:]}
    if derived != {k: allowlist[k] for k in derived}:
        sys.exit(f"{ALLOWLIST}: the split does not follow from seed {allowlist['seed']}; rebuild it, do not edit it")
    return derived


class SquadPage(HTMLParser):
    """Paragraphs (`<pre>`) and their questions (`<strong class="question">`, gold `<span class="answer">` spans,
    `<span class="no-answer">` for an unanswerable one) of one SQuAD-explorer page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self.questions: list[dict] = []
        self._field: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class")
        if tag == "pre":
            self._field = "paragraph"
        elif tag == "div" and cls == "qa-wrap":
            self.questions.append({"id": dict(attrs).get("data-id"), "paragraph": len(self.paragraphs) - 1,
                                   "answers": [], "unanswerable": False})
        elif tag == "strong" and cls == "question" or tag == "span" and cls == "answer":
            self._field = cls
        elif tag == "span" and cls == "no-answer":
            self.questions[-1]["unanswerable"] = True
        if self._field:
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._field:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if not self._field or tag not in ("pre", "strong", "span"):
            return
        text = " ".join("".join(self._text).split())
        if self._field == "paragraph":
            self.paragraphs.append(text)
        elif self._field == "question":
            self.questions[-1]["question"] = text
        else:
            self.questions[-1]["answers"].append(text)
        self._field = None


def read_page(repo: Path, commit: str, path: str) -> SquadPage:
    """One SQuAD-explorer page as it is at `commit` of the git directory `repo`, parsed."""
    page = subprocess.run(["git", "--git-dir", str(repo), "show", f"{commit}:{path}"],
                          check=True, capture_output=True).stdout.decode("utf-8")
    parsed = SquadPage()
    parsed.feed(page)
    return parsed


def build_squad(repo: Path) -> None:
    allowlist = json.loads(ALLOWLIST.read_text(encoding="utf-8"))
    split = squad_split(allowlist)
    source = allowlist["source"]
    for part in ("dev", "test"):
        for title in split[part]:
            article = read_page(repo, source["commit"], source["path"].format(article=title))
            name = squad_domain(title)
            folder = EVAL / "documents" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.txt").write_text("\n\n".join(article.paragraphs) + "\n", encoding="utf-8")
            rows = []
            for q in article.questions:
                # the annotators' commonest first; a span cut inside a word ("Gan" of "Gandhi") is no gold
                paragraph = normalize(article.paragraphs[q["paragraph"]])
                golds = [a for a, _ in Counter(q["answers"]).most_common()
                         if normalize(a).strip() and normalize(a) in paragraph]
                if not golds and not q["unanswerable"]:
                    continue
                rows.append({"id": f"squad-{q['id']}", "question": q["question"],
                             "answer": None if q["unanswerable"] else golds[0],
                             **({"alternatives": golds[1:]} if len(golds) > 1 else {}),
                             "source": None if q["unanswerable"] else f"{name}.txt", "page": None,
                             "paragraph": q["paragraph"] + 1})
            (EVAL / f"{name}_{part}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            print(f"{title}: {len(article.paragraphs)} paragraphs, {sum(r['answer'] is not None for r in rows)} "
                  f"answerable, {sum(r['answer'] is None for r in rows)} unanswerable ({part})", file=sys.stderr)


def squad_domain(title: str) -> str:
    """'Sky_(United_Kingdom)' -> 'squad-sky-united-kingdom': a domain and folder name without punctuation."""
    return "squad-" + "-".join(re.findall(r"[a-z0-9]+", title.lower()))


_LINK = re.compile(r"linkgit:([\w.-]+)\[(\d)\]")
_XREF = re.compile(r"<<[^,>]*,\s*([^>]*)>>|<<([^>]*)>>")
_ATTRIBUTES = {"{litdd}": "--", "{caret}": "^", "{tilde}": "~", "{apostrophe}": "'", "{startsb}": "[",
               "{endsb}": "]", "{plus}": "+", "{nbsp}": " ", "{empty}": ""}
_DROP = re.compile(r"^(?:include|ifdef|ifndef|endif|ifeval)::|^\[\[.*\]\]$|^\[[a-z]+(?:,.*)?\]$|^:[\w-]+:")
_RULE = re.compile(r"^([-=~^.*+_'])\1+$|^\+$")


def asciidoc_to_text(source: str) -> str:
    """Plain text of an AsciiDoc manual page: markup lines, block delimiters and heading underlines dropped,
    links and attributes spelled out."""
    lines = []
    for line in source.splitlines():
        stripped = line.strip()
        if _DROP.match(stripped) or _RULE.match(stripped):
            continue
        line = _LINK.sub(r"\1(\2)", line)
        line = _XREF.sub(lambda m: m.group(1) or m.group(2), line)
        for name, value in _ATTRIBUTES.items():
            line = line.replace(name, value)
        lines.append(line.replace("`", "").rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def build_git_doc(folder: Path) -> None:
    out = EVAL / "documents" / "git"
    out.mkdir(parents=True, exist_ok=True)
    for page in GIT_PAGES:
        text = asciidoc_to_text((folder / f"{page}.txt").read_text(encoding="utf-8"))
        (out / f"{page}.txt").write_text(text, encoding="utf-8")
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "git-doc"], capture_output=True, text=True)
    print(f"{len(GIT_PAGES)} pages from {folder} (git-doc {version.stdout or 'version unknown'})", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    squad = sub.add_parser("squad", help="SQuAD 2.0 dev and test articles of the allowlist")
    squad.add_argument("--repo", type=Path, required=True, help="git directory of rajpurkar/SQuAD-explorer")
    gitdoc = sub.add_parser("git-doc", help="git's manual pages as plain text")
    gitdoc.add_argument("--from", dest="folder", type=Path, default=Path("/usr/share/doc/git-doc"))
    args = parser.parse_args()
    if args.what == "squad":
        build_squad(args.repo)
    else:
        build_git_doc(args.folder)


if __name__ == "__main__":
    main()
