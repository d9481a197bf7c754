"""One Chroma collection per domain, kept in sync with the domain's folder file by file.

The store describes itself: the collection's metadata names its embedding model, and every chunk's metadata names
its file, the file's content hash, the chunking used and how many chunks the file has. That is the manifest
(file -> hash -> chunk ids), read back from the store on each load, so it can never disagree with what is stored.
A file counts as indexed only when all its chunks of one hash are present, so an interrupted load is repaired by
the next one.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import sha256_file
from .chunking import Chunk, Hit, StoredChunk, chunk_pages
from .documents import discover, read_pages
from .embeddings import Embedder
from ..errors import ConfigError, DocumentError, IndexBusyError, IndexMismatchError, StoreError
from .store import Store

__all__ = ["DomainIndex", "SyncReport", "StoredChunk", "Hit", "rebuild_domain", "normalize_domain"]

log = logging.getLogger("docbot")
# Each embedding call is sized to take about this long, measured as it goes, and its files are written as soon as
# it returns: a crash or Ctrl-C loses at most that much work on any CPU, where fixed-size groups lose more on a slow one
_EMBED_SECONDS = 2.0
_PAGE = 5000  # records per read of a whole collection: one read of a large one breaks SQLite's variable limit
_FIRST_GROUP = 16  # chunks in the first call, before the speed is known
_MAX_GROUP = 512  # larger calls are no faster


@dataclass
class SyncReport:
    """What a load did: counts for the summary line, and every skipped file with its reason."""

    domain: str
    files: int = 0
    pages: int = 0
    chunks: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    not_updated: str = ""  # why the index was read as it stands instead of synced (another writer, no folder)

    def count_unchanged(self, entry: _StoredFile) -> None:
        """A file found indexed as it is on disk: counted, not embedded again."""
        self.unchanged += 1
        self.pages += entry.pages
        self.chunks += len(entry.ids)

    def __str__(self) -> str:
        if self.not_updated:
            return (f"{self.domain}: {self.chunks} chunks from {self.unchanged} files as indexed, not updated: "
                    f"{self.not_updated}")
        return (f"{self.domain}: {self.files} files, {self.pages} pages, {self.chunks} chunks "
                f"({len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, "
                f"{self.unchanged} unchanged), {len(self.skipped)} skipped")


def normalize_domain(name: str) -> str:
    """Domain names are case-insensitive words: letters, digits, '-' and '_'."""
    domain = name.strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", domain):
        raise ConfigError(f"domain name {name!r} must be letters, digits, '-' or '_' (at most 63)")
    return domain


def rebuild_domain(store: Store, domain: str, embedder: Embedder, root: Path, chunk_size: int,
                   chunk_overlap: int, lock_timeout: float, progress: bool = True) -> SyncReport:
    """Re-embed every file into a new collection, whatever model built the old one, and swap it in once complete:
    until then readers keep answering from the old index, and an interrupted rebuild leaves it as it was."""
    domain = normalize_domain(domain)
    name = f"docbot-{domain}"
    side = f"{name}.rebuild"  # a '.' cannot occur in a domain's own collection name
    with store.connection(), store.writer(domain, lock_timeout) as renew:
        client = store.client
        if side in {c.name for c in client.list_collections()}:
            client.delete_collection(side)  # left by an interrupted rebuild
        index = DomainIndex(store, domain, embedder, lock_timeout, collection=_create(client, side, domain, embedder))
        report = index._update(Path(root), chunk_size, chunk_overlap, progress, renew)
        if name in {c.name for c in client.list_collections()}:
            client.delete_collection(name)
        index._collection.modify(name=name)
    return report


def _create(client, name: str, domain: str, embedder: Embedder):
    """A cosine collection that records the embedding model and backend that fill it."""
    return client.get_or_create_collection(
        name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None,
        metadata={"domain": domain, "embedding_model": embedder.model_id, "embedding_dim": embedder.dimension,
                  "embedding_backend": embedder.backend})


class DomainIndex:
    """The collection of one domain, opened with the embedder that must match the one it was built with."""

    def __init__(self, store: Store, domain: str, embedder: Embedder, lock_timeout: float = 30.0,
                 collection=None) -> None:
        from chromadb.errors import NotFoundError

        self.domain = normalize_domain(domain)
        self.embedder = embedder
        self.lock_timeout = lock_timeout  # seconds a write waits for another process's write to finish
        self._store = store
        self._collection = collection  # given only by `rebuild_domain`, for the collection it fills
        if collection is None:
            try:  # opening an existing domain is a read: it must not wait for a writer
                with store.connection():
                    self._collection = store.client.get_collection(f"docbot-{self.domain}",
                                                                   embedding_function=None)
            except NotFoundError:
                with store.connection(), store.writer(self.domain, lock_timeout):
                    self._collection = _create(store.client, f"docbot-{self.domain}", self.domain, embedder)
        self._check_model()

    @staticmethod
    def list_domains(client) -> list[str]:
        """Domains that have a collection in the store."""
        return sorted((c.metadata or {}).get("domain", c.name) for c in client.list_collections()
                      if c.name.startswith("docbot-") and "." not in c.name)

    def count(self) -> int:
        return self._read("count")

    def stamp(self) -> tuple[str, int]:
        """(collection id, generation): what the keyword index is built from. The generation is read from the
        store each time; every write advances it, to an odd number while it runs and an even one when done, so
        a reader that sees the same even stamp before and after reading the chunks read a finished state."""
        self._read("count")  # reopens the collection by name if a rebuilt one was swapped in
        with self._store.connection():
            collection = self._store.client.get_collection(self._collection.name, embedding_function=None)
        return str(collection.id), int((collection.metadata or {}).get("generation", 0))

    def sync(self, root: Path, chunk_size: int, chunk_overlap: int, progress: bool = True) -> SyncReport:
        """Make the collection match the folder: embed new and changed files, drop chunks of removed ones.

        Checking needs no lock. Writing takes the store's write lease, waiting at most `lock_timeout` seconds
        for another writer; if that one is still busy, an index that has chunks is left as it is and read
        (`report.not_updated` names the writer), and an empty one raises `IndexBusyError`.
        """
        root = Path(root)
        chunking = f"{chunk_size}/{chunk_overlap}"
        report, current = self._check(root, discover(root), chunking)
        if current:
            return report
        try:
            with self._store.connection(), self._store.writer(self.domain, self.lock_timeout) as renew:
                return self._update(root, chunk_size, chunk_overlap, progress, renew)
        except IndexBusyError as exc:
            if self.count() == 0:
                raise
            report.not_updated = str(exc)
            return report

    def as_is(self, reason: str) -> SyncReport:
        """Open the domain as the store has it, without a folder to sync from (a teammate's shared index)."""
        report = SyncReport(self.domain, not_updated=reason)
        for entry in self._stored_files().values():
            report.count_unchanged(entry)
        report.files = report.unchanged
        return report

    def query(self, embedding: np.ndarray, n: int) -> list[Hit]:
        """The `n` nearest chunks to a unit-length query embedding. A chunk that another process deleted while the
        query ran comes back from a Chroma server without its text and metadata (seen under benchmarks/load.py):
        it is left out."""
        res = self._read("query", query_embeddings=[embedding], n_results=n,  # fewer when the domain has fewer
                         include=["documents", "metadatas", "distances"])
        return [Hit(i, d, m["source"], m.get("page"), 1.0 - dist)
                for i, d, m, dist in zip(res["ids"][0], res["documents"][0], res["metadatas"][0],
                                         res["distances"][0]) if m is not None and d is not None]

    def get(self, ids: list[str], query_embedding: np.ndarray) -> list[Hit]:
        """Chunks by id, with their similarity to the query (for hits found by keyword search)."""
        if not ids:
            return []
        res = self._read("get", ids=ids, include=["documents", "metadatas", "embeddings"])
        sims = np.asarray(res["embeddings"], dtype=np.float32) @ query_embedding
        by_id = {i: Hit(i, d, m["source"], m.get("page"), float(s))
                 for i, d, m, s in zip(res["ids"], res["documents"], res["metadatas"], sims)}
        return [by_id[i] for i in ids if i in by_id]

    def all_chunks(self) -> list[StoredChunk]:
        """Every chunk with its file's content hash, in document order (file, page, position)."""
        res = self._read_all(["documents", "metadatas"])
        chunks = [StoredChunk(i, d, m["source"], m.get("page"), m["chunk_no"], m["file_hash"])
                  for i, d, m in zip(res["ids"], res["documents"], res["metadatas"])]
        return sorted(chunks, key=lambda c: (c.source, c.page or 0, c.chunk_no))

    # -- internals ----------------------------------------------------------------------------------------------

    def _check_model(self) -> None:
        """The collection must have been built with this embedder, or its vectors mean nothing to the queries."""
        meta = self._collection.metadata or {}
        built_with = (meta.get("embedding_model"), meta.get("embedding_dim"))
        rebuild = f"rebuild the index with `reindex {self.domain}` (bot.reindex('{self.domain}')), which " \
                  f"re-embeds every file"
        if built_with != (self.embedder.model_id, self.embedder.dimension):
            raise IndexMismatchError(
                f"the index of domain '{self.domain}' was built with embedding model {built_with[0]} "
                f"({built_with[1]} dimensions) but docbot now uses {self.embedder.model_id} "
                f"({self.embedder.dimension}); set embedding_model back to {built_with[0]}, or {rebuild}")
        backend = meta.get("embedding_backend", Embedder.backend)  # indexes made before it was recorded: this one
        if backend != self.embedder.backend:
            raise IndexMismatchError(
                f"the index of domain '{self.domain}' was built by the {backend} embedding backend but this "
                f"docbot embeds questions with {self.embedder.backend}, whose vectors differ; {rebuild}")

    def _read(self, method: str, **kwargs):
        """A read of the collection, reopened by name if another process swapped in a rebuilt one (`reindex`)."""
        from chromadb.errors import NotFoundError

        try:
            with self._store.connection():
                return getattr(self._collection, method)(**kwargs)
        except NotFoundError:
            try:
                self._collection = self._store.client.get_collection(f"docbot-{self.domain}", embedding_function=None)
            except NotFoundError:
                raise StoreError(f"domain '{self.domain}' was removed from the {self._store.where}; "
                                 f"load it again") from None
            self._check_model()
            return getattr(self._collection, method)(**kwargs)

    def _read_all(self, include: list[str]) -> dict[str, list]:
        """Every record, in pages of `_PAGE`: one read of a large collection breaks SQLite's query-variable limit."""
        res: dict[str, list] = {"ids": [], "documents": [], "metadatas": []}
        while True:
            page = self._read("get", include=include, limit=_PAGE, offset=len(res["ids"]))
            for key, values in res.items():
                values += page.get(key) or []
            if len(page["ids"]) < _PAGE:
                return res

    def _check(self, root: Path, files: list[Path], chunking: str) -> tuple[SyncReport, bool]:
        """What is already indexed as the folder has it, and whether that is everything (nothing to write)."""
        report = SyncReport(self.domain, files=len(files))
        stored = self._stored_files()
        for path in files:
            entry = stored.pop(path.relative_to(root).as_posix(), None)
            try:
                current = entry is not None and entry.matches(sha256_file(path), chunking)
            except OSError:
                current = False
            if current:
                report.count_unchanged(entry)
        return report, report.unchanged == len(files) and not stored

    def _update(self, root: Path, chunk_size: int, chunk_overlap: int, progress: bool, renew) -> SyncReport:
        """The writing half of `sync`, run under the write lease (renewed after every embedding batch)."""
        from tqdm.auto import tqdm

        chunking = f"{chunk_size}/{chunk_overlap}"
        report = SyncReport(self.domain)
        self._advance_generation(writing=True)  # stays odd if this write fails: no reader saves a half state
        stored = self._stored_files()
        todo: list[tuple[str, str, list[Chunk], int]] = []  # (source, file hash, chunks, pages)
        files = discover(root)
        report.files = len(files)
        for path in tqdm(files, desc=f"Reading {self.domain}", unit="file", file=sys.stderr,
                         disable=not progress, leave=False):
            source = path.relative_to(root).as_posix()
            try:
                digest = sha256_file(path)
            except OSError as exc:
                self._skip(report, source, path, f"cannot be read ({exc.strerror or exc})", stored)
                continue
            entry = stored.get(source)
            if entry is not None and entry.matches(digest, chunking):
                report.count_unchanged(entry)
                continue
            try:
                pages = read_pages(path)
            except DocumentError as exc:
                self._skip(report, source, path, str(exc).split(": ", 1)[-1], stored)
                continue
            todo.append((source, digest, chunk_pages(self.domain, source, pages, chunk_size, chunk_overlap),
                         len(pages)))
            (report.changed if entry is not None else report.added).append(source)
        for source in sorted(set(stored) - {p.relative_to(root).as_posix() for p in files}):
            self._delete_ids(stored[source].ids)
            report.removed.append(source)
        total = sum(len(chunks) for _, _, chunks, _ in todo)
        size = [_FIRST_GROUP]  # the next call's chunks, from the speed of the last one
        with tqdm(total=total, desc=f"Indexing {self.domain}", unit="chunk", file=sys.stderr,
                  disable=not progress or total == 0) as bar:
            for group in _groups(todo, lambda: size[0]):
                texts = [c.text for _, _, chunks, _ in group for c in chunks]
                started = time.perf_counter()
                vectors = self.embedder.embed(texts)
                per_second = len(texts) / max(time.perf_counter() - started, 1e-3)
                size[0] = max(_FIRST_GROUP, min(_MAX_GROUP, int(per_second * _EMBED_SECONDS)))
                renew()
                start = 0
                for source, digest, chunks, pages in group:
                    self._write_file(chunks, vectors[start:start + len(chunks)], digest, chunking,
                                     stored.get(source))
                    start += len(chunks)
                    report.pages += pages
                    report.chunks += len(chunks)
                    bar.update(len(chunks))
        self._advance_generation(writing=False)
        return report

    def _advance_generation(self, writing: bool) -> None:
        """The next odd generation as a write starts, the next even one as it ends (under the write lease)."""
        meta = dict(self._store.client.get_collection(self._collection.name, embedding_function=None).metadata or {})
        generation = int(meta.get("generation", 0)) + 1
        if generation % 2 != writing:  # odd while writing, even when done
            generation += 1
        meta["generation"] = generation
        self._collection.modify(metadata=meta)

    def _stored_files(self) -> dict[str, _StoredFile]:
        res = self._read_all(["metadatas"])
        files: dict[str, _StoredFile] = defaultdict(_StoredFile)
        for chunk_id, meta in zip(res["ids"], res["metadatas"]):
            entry = files[meta["source"]]
            entry.ids.append(chunk_id)
            entry.hashes.add((meta["file_hash"], meta["chunking"]))
            entry.expected = meta["file_chunks"]
            entry.page_numbers.add(meta.get("page"))
        return dict(files)

    def _write_file(self, chunks: list[Chunk], vectors: np.ndarray, digest: str, chunking: str,
                    old: _StoredFile | None) -> None:
        """Add a file's new chunks, then remove its old ones: a crash in between leaves it marked incomplete."""
        metas = [{"source": c.source, "chunk_no": c.chunk_no, "file_hash": digest, "chunking": chunking,
                  "file_chunks": len(chunks), **({"page": c.page} if c.page is not None else {})} for c in chunks]
        step = self._store.client.get_max_batch_size()
        for i in range(0, len(chunks), step):
            self._collection.upsert(ids=[c.id for c in chunks[i:i + step]], embeddings=vectors[i:i + step],
                                    documents=[c.text for c in chunks[i:i + step]], metadatas=metas[i:i + step])
        if old is not None:
            self._delete_ids(sorted(set(old.ids) - {c.id for c in chunks}))

    def _delete_ids(self, ids: list[str]) -> None:
        step = self._store.client.get_max_batch_size()
        for i in range(0, len(ids), step):
            self._collection.delete(ids=ids[i:i + step])

    def _skip(self, report: SyncReport, source: str, path: Path, reason: str,
              stored: dict[str, _StoredFile]) -> None:
        """Report an unreadable file; chunks from an earlier readable version go, as they no longer match it."""
        log.warning("skipped %s: %s", str(path).replace("\n", "\\n"), reason)  # one line, whatever the name
        report.skipped.append((source, reason))
        if source in stored:
            self._delete_ids(stored.pop(source).ids)


@dataclass
class _StoredFile:
    ids: list[str] = field(default_factory=list)
    hashes: set[tuple[str, str]] = field(default_factory=set)
    expected: int = 0
    page_numbers: set[int | None] = field(default_factory=set)

    def matches(self, digest: str, chunking: str) -> bool:
        """All the chunks of this file content, cut this way, are stored (none missing, none left over)."""
        return self.hashes == {(digest, chunking)} and len(self.ids) == self.expected

    @property
    def pages(self) -> int:
        return len(self.page_numbers)


def _groups(todo: list, size):
    """Consecutive files whose chunks add up to about `size()` (asked as each group starts), so embedding runs in
    batches of a chosen duration; a file is never split."""
    group, n = [], 0
    for item in todo:
        group.append(item)
        n += len(item[2])
        if n >= size():
            yield group
            group, n = [], 0
    if group:
        yield group
