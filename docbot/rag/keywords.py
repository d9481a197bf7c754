"""The keyword (BM25) side of hybrid search, built once per change of the index rather than once per process.

The index is saved under `<cache>/<collection id>/g<generation>/` (bm25s's own files, the chunk ids and the
vocabulary) and loaded memory-mapped by every later process until the collection's generation moves (see
`DomainIndex.stamp`). The cache is beside the embedded store (`<index folder>/keywords/`) or, for a team's
server, per user (`~/.cache/docbot/keywords/<server>/`). A reader saves only a state it saw finished: the same
even generation before and after reading the chunks, so it never waits for a writer and never saves half a
write. A damaged or missing cache is rebuilt, never an error.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

from .index import DomainIndex

__all__ = ["KeywordIndex", "WORD", "base_forms"]

log = logging.getLogger("docbot")
WORD = re.compile(r"[a-z][a-z0-9]+(?:-[a-z0-9]+)*")  # a word of the domain's vocabulary ("follow-up" whole)
_IDS = "docbot_ids.json"  # the chunk ids in bm25s's document order, and the vocabulary; written last
_INFLECTIONS = (("ies", "y"), ("es", ""), ("s", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", ""))


def base_forms(word: str) -> list[str]:
    """`word` and what it may be inflected from ("supervises": "supervise"; "shredding": "shred"), so that two
    forms of one word meet when both sides are expanded."""
    return [word] + [word[:-len(suffix)] + replacement for suffix, replacement in _INFLECTIONS
                     if word.endswith(suffix) and len(word) - len(suffix) >= 3]


class KeywordIndex:
    """BM25 over one domain's chunks, from the cache when the index has not changed since it was saved."""

    def __init__(self, index: DomainIndex, cache: Path | None) -> None:
        self.index, self.cache = index, cache
        self.built = False  # whether this process built it (False: loaded from the cache, or not yet needed)
        self._bm25 = None
        self._ids: list[str] = []
        self._vocabulary: set[str] = set()

    def search(self, query: str, n: int) -> list[str]:
        """Ids of the `n` best chunks for `query` by BM25, best first; only chunks sharing a word with it."""
        import bm25s

        self.prepare()
        if not self._ids:
            return []
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.vocab:
            return []
        docs, scores = self._bm25.retrieve(tokens, k=min(n, len(self._ids)), show_progress=False)
        return [self._ids[d] for d, s in zip(docs[0], scores[0]) if s > 0]

    def vocabulary(self) -> set[str]:
        """Every `WORD` of the domain's chunks, lower case, with their `base_forms`."""
        self.prepare()
        return self._vocabulary

    def prepare(self) -> None:
        """Load it, or build and save it, now rather than at the first search."""
        if self._bm25 is not None:
            return
        stamp = self.index.stamp()
        folder = self.cache / stamp[0] / f"g{stamp[1]}" if self.cache is not None else None
        if folder is not None and stamp[1] % 2 == 0 and (folder / _IDS).is_file() and self._load(folder):
            return
        self._build()
        if folder is not None and stamp[1] % 2 == 0 and self.index.stamp() == stamp:
            self._save(folder)

    def _build(self) -> None:
        import bm25s

        chunks = self.index.all_chunks()
        self._ids = [c.id for c in chunks]
        words = {w for c in chunks for w in WORD.findall(c.text.lower())}
        self._vocabulary = {form for w in words for form in base_forms(w)}
        self._bm25 = bm25s.BM25()
        corpus = bm25s.tokenize([c.text for c in chunks], stopwords="en", show_progress=False) if chunks else None
        if corpus is not None and corpus.vocab:
            self._bm25.index(corpus, show_progress=False)
        else:  # no chunk, or stopwords alone ("the"), which bm25s refuses to index: nothing to find by keyword
            self._ids = []
        self.built = True

    def _load(self, folder: Path) -> bool:
        import bm25s

        try:
            saved = json.loads((folder / _IDS).read_text(encoding="utf-8"))
            self._bm25 = bm25s.BM25.load(str(folder), mmap=True) if saved["ids"] else bm25s.BM25()
        except (OSError, ValueError, KeyError) as exc:
            log.warning("the saved keyword index in %s is unreadable (%s); building it again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)  # so that the rebuilt one is saved in its place
            self._bm25 = None
            return False
        self._ids, self._vocabulary = saved["ids"], set(saved["words"])
        return True

    def _save(self, folder: Path) -> None:
        """Written in a temp folder and renamed into place; older generations of the collection are removed. A
        cache that cannot be written costs the next process a rebuild, nothing more."""
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
            try:
                if self._ids:
                    self._bm25.save(str(staging), show_progress=False)
                (staging / _IDS).write_text(json.dumps({"ids": self._ids, "words": sorted(self._vocabulary)}),
                                            encoding="utf-8")
                staging.rename(folder)  # fails when another process saved this generation first: theirs is as good
            except OSError:
                if not folder.is_dir():
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            for old in folder.parent.iterdir():
                if old.name != folder.name and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            log.warning("could not save the keyword index in %s (%s); the next start builds it again", folder, exc)
