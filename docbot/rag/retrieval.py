"""Question -> scored chunks: vector search, optionally fused with BM25 by reciprocal rank fusion."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .chunking import cite
from .index import DomainIndex, Hit

__all__ = ["Retriever", "Source", "rrf_fuse"]

_RRF_K = 60  # the constant from Cormack et al. (2009); damps the weight of the very first ranks
_POOL = 20  # candidates taken from each ranking before fusing
_WORD = re.compile(r"[a-z][a-z0-9]+(?:-[a-z0-9]+)*")


@dataclass(frozen=True)
class Source:
    """A retrieved chunk as cited with an answer."""

    file: str
    page: int | None
    chunk_id: str
    score: float  # cosine similarity of the chunk to the question, in [-1, 1]
    excerpt: str
    text: str

    def __str__(self) -> str:
        return cite(self.file, self.page)

    @property
    def block(self) -> tuple[str, str]:
        """(label, text): the chunk as a prompt's context block."""
        return str(self), self.text


class Retriever:
    """Searches one domain's index; the keyword index is built on first use (each load makes a new Retriever)."""

    def __init__(self, index: DomainIndex, hybrid: bool) -> None:
        self.index = index
        self.hybrid = hybrid
        self._bm25 = None
        self._bm25_ids: list[str] = []
        self._vocabulary: set[str] | None = None

    def search(self, query: str, k: int, hybrid: bool | None = None) -> list[Source]:
        """The `k` best chunks for `query`, best first; `hybrid` overrides the retriever's mode for this call."""
        hybrid = self.hybrid if hybrid is None else hybrid
        q = self.index.embedder.embed([query])[0]
        vector_hits = self.index.query(q, max(k, _POOL) if hybrid else k)
        if not hybrid:
            return [_source(h) for h in vector_hits[:k]]
        keyword_ids = self._keyword_search(query, max(k, _POOL))
        fused = rrf_fuse([[h.id for h in vector_hits], keyword_ids])[:k]
        known = {h.id: h for h in vector_hits}
        extra = self.index.get([i for i in fused if i not in known], q)
        known.update((h.id, h) for h in extra)
        return [_source(known[i]) for i in fused if i in known]

    def unknown_terms(self, question: str) -> list[str]:
        """The question's specific words that occur nowhere in the domain: not in any chunk and not common English
        words. "ibuprofen" in a question about a formulary that never names it is the sign of a question the
        documents do not cover (on the Medical dev set: 5 of 29 off-topic questions, 0 of 30 answerable ones)."""
        if self._vocabulary is None:
            self._vocabulary = {w for c in self.index.all_chunks() for w in _WORD.findall(c.text.lower())}
        return [w for w in _WORD.findall(question.lower()) if len(w) > 3 and w not in self._vocabulary
                and w.removesuffix("s") not in self._vocabulary and not self.index.embedder.is_common_word(w)]

    def _keyword_search(self, query: str, n: int) -> list[str]:
        import bm25s

        if self._bm25 is None:
            chunks = self.index.all_chunks()
            self._bm25_ids = [c.id for c in chunks]
            texts = [c.text for c in chunks]
            self._bm25 = bm25s.BM25()
            if texts:
                self._bm25.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        if not self._bm25_ids:
            return []
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.vocab:
            return []
        docs, scores = self._bm25.retrieve(tokens, k=min(n, len(self._bm25_ids)), show_progress=False)
        return [self._bm25_ids[d] for d, s in zip(docs[0], scores[0]) if s > 0]


def rrf_fuse(rankings: list[list[str]], k: int = _RRF_K) -> list[str]:
    """Reciprocal rank fusion: ids ordered by the sum of 1/(k + rank) over the rankings that hold them."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda d: -scores[d])


def _source(hit: Hit) -> Source:
    excerpt = " ".join(hit.text.split())
    return Source(hit.source, hit.page, hit.id, round(hit.similarity, 4),
                  excerpt if len(excerpt) <= 200 else excerpt[:199] + "…", hit.text)
