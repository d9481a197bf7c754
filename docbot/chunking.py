"""Split pages into chunks with stable ids: the same text in the same place always gets the same id."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from .documents import Page

__all__ = ["Chunk", "chunk_pages"]


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, the unit that is embedded, retrieved and cited."""

    id: str
    text: str
    source: str  # path relative to the domain folder, with forward slashes
    page: int | None  # 1-based PDF page; None for text files
    chunk_no: int  # position within its page
    content_hash: str  # sha256 of `text`


def chunk_pages(domain: str, source: str, pages: Iterable[Page], size: int, overlap: int) -> list[Chunk]:
    """Chunks of each page, split on paragraphs, then lines, then words (langchain's recursive splitter)."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)
    chunks = []
    for page in pages:
        for no, text in enumerate(splitter.split_text(page.text)):
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            where = f"p{page.number}" if page.number is not None else "p-"
            chunks.append(Chunk(f"{domain}/{source}#{where}.c{no}.{digest[:12]}", text, source, page.number, no, digest))
    return chunks
