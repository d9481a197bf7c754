"""Question -> scored chunks: vector search, optionally fused with BM25 by reciprocal rank fusion."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .chunking import cite
from .index import DomainIndex, Hit
from .keywords import WORD, KeywordIndex, base_forms

__all__ = ["Retriever", "Source", "rrf_fuse"]

_RRF_K = 60  # the constant from Cormack et al. (2009); damps the weight of the very first ranks
_POOL = 20  # candidates taken from each ranking before fusing
# A word the domain never uses names something it does not cover when the embedding model's vocabulary spells it
# in this many pieces or more; users' own words for what the documents hold take fewer.
_NAME_PIECES = 3
_QUANTITY = re.compile(r"\b\d+(?:-[a-z]+)+")  # "10-year-old", "5-day"


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
    """Searches one domain's index. Its keyword index is loaded on first use from `keyword_cache` when the index
    has not changed since it was saved there, else built (and saved); each load makes a new Retriever."""

    def __init__(self, index: DomainIndex, hybrid: bool, keyword_cache: Path | None = None) -> None:
        self.index = index
        self.hybrid = hybrid
        self.keywords = KeywordIndex(index, keyword_cache)

    def search(self, query: str, k: int, hybrid: bool | None = None, embedding=None) -> list[Source]:
        """The `k` best chunks for `query`, best first; `hybrid` overrides the retriever's mode for this call,
        `embedding` is the query's vector when it is already computed."""
        hybrid = self.hybrid if hybrid is None else hybrid
        q = self.index.embedder.embed_question(query) if embedding is None else embedding
        vector_hits = self.index.query(q, max(k, _POOL) if hybrid else k)
        if not hybrid:
            return [_source(h) for h in vector_hits[:k]]
        keyword_ids = self.keywords.search(query, max(k, _POOL))
        fused = rrf_fuse([[h.id for h in vector_hits], keyword_ids])[:k]
        known = {h.id: h for h in vector_hits}
        extra = self.index.get([i for i in fused if i not in known], q)
        known.update((h.id, h) for h in extra)
        return [_source(known[i]) for i in fused if i in known]

    def unknown_terms(self, question: str) -> list[str]:
        """The question's names that occur nowhere in the domain: words in no chunk that the embedding model's
        vocabulary spells in `_NAME_PIECES` pieces or more. A drug or product that no chunk names is the sign of a
        question the documents do not cover; "freezer" for "must not be frozen", or "handwash" for "hand
        washing", is the user's own word for what they hold."""
        vocabulary, pieces = self.keywords.vocabulary(), self.index.embedder.word_pieces

        def unknown(word: str) -> bool:  # in no chunk in any of its forms, and spelled like a name in all of them
            return all(f not in vocabulary and pieces(f) >= _NAME_PIECES for f in base_forms(word))

        question = _QUANTITY.sub(" ", question.lower())  # "10-year-old" is a quantity: its words name nothing
        # a hyphenated word is known whole ("follow-up") or by its parts; short parts ("wi-fi", "one-off") name nothing
        return [w for w in WORD.findall(question) if len(w) > 3 and not any(f in vocabulary for f in base_forms(w))
                and (parts := [part for part in w.split("-") if len(part) > 3]) and all(map(unknown, parts))]


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
