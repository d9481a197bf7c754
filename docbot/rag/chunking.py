"""Split pages into chunks with stable ids: the same text in the same place always gets the same id."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

from .documents import Page

__all__ = ["Chunk", "Hit", "StoredChunk", "chunk_pages", "cite"]

_WINDOW_CHUNKS = 64  # a page is handed to the splitter in pieces of at most this many chunk sizes


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, the unit that is embedded, retrieved and cited."""

    id: str
    text: str
    source: str  # path relative to the domain folder, with forward slashes
    page: int | None  # 1-based PDF page; None for text files
    chunk_no: int  # position within its page
    content_hash: str  # sha256 of `text`


def cite(source: str, page: int | None) -> str:
    """How a chunk is named to users and to the model: "file p.N", or "file" for text files."""
    return source if page is None else f"{source} p.{page}"


@dataclass(frozen=True)
class Hit:
    """A stored chunk returned by a search; `similarity` is the cosine similarity to the query."""

    id: str
    text: str
    source: str
    page: int | None
    similarity: float


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as stored, with the content hash of the file it came from."""

    id: str
    text: str
    source: str
    page: int | None
    chunk_no: int
    file_hash: str

    @property
    def block(self) -> tuple[str, str]:
        """(label, text): the chunk as a prompt's context block."""
        return cite(self.source, self.page), self.text


def chunk_pages(domain: str, source: str, pages: Iterable[Page], size: int, overlap: int) -> list[Chunk]:
    """Chunks of each page, split on paragraphs, then lines, then words (langchain's recursive splitter)."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)
    chunks = []
    for page in pages:
        pieces = chain.from_iterable(splitter.split_text(w) for w in _windows(page.text, size * _WINDOW_CHUNKS))
        for no, text in enumerate(pieces):
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            where = f"p{page.number}" if page.number is not None else "p-"
            chunks.append(Chunk(f"{domain}/{source}#{where}.c{no}.{digest[:12]}", text, source, page.number, no, digest))
    return chunks


def _windows(text: str, limit: int) -> Iterator[str]:
    """`text` in pieces of at most `limit` characters, each cut at its last paragraph break, else line break, else
    space in its second half. The splitter holds every word of its input at once, so a huge line with no newline
    (or no spaces) costs it far more memory and time than its text. A text within `limit` is one piece, so the
    chunks of ordinary pages are unchanged."""
    start = 0
    while len(text) - start > limit:
        end = start + limit
        cut = next((c for c in (text.rfind(sep, start + limit // 2, end) for sep in ("\n\n", "\n", " ")) if c > 0),
                   end)
        yield text[start:cut]
        start = cut
    yield text[start:]
