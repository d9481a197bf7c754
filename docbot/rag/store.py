"""Where the index lives (a Chroma store in a local folder, or a team's shared Chroma server) and who may write it.

Reading never waits. Writing takes a lease first, so two processes never write one index at once:
- locally, Chroma's embedded store is not safe for two writers, so one process at a time holds an `flock` on
  `<index_dir>/writer.lock`; the kernel drops it when the holder dies, so a killed process leaves no lock behind;
- on a server, the lease lives on the server itself (collection `docbot.leases`), one per domain, with an expiry
  the holder keeps renewing, so people on different machines see the same lease and a crashed holder's lease lapses.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..files import cache_dir, folder_lock
from ..errors import ConfigError, IndexBusyError, StoreError

__all__ = ["Store", "open_store", "TOKEN_ENV"]

log = logging.getLogger("docbot")
TOKEN_ENV = "CHROMA_TOKEN"  # the shared server's token comes only from the environment, so it is never in a file
LEASE_TTL = 120.0  # seconds a server lease lasts unrenewed; a writer renews it after every embedding batch
_LEASES = "docbot.leases"  # collection of lease records; its name cannot clash with a domain's `docbot-<name>`
_POLL = 0.25  # seconds between tries while waiting for a writer to finish


@dataclass
class Store:
    """A Chroma client and the way its writers take turns; `where` names it in messages."""

    client: object
    where: str
    index_dir: Path | None = None  # set for the embedded store; None on a server

    @property
    def keyword_cache(self) -> Path:
        """Where the keyword indexes of this store's domains are saved: inside the embedded store's folder, or
        per user for a server (each teammate's process loads its own copy, rebuilt when the index changes)."""
        if self.index_dir is not None:
            return self.index_dir / "keywords"
        return cache_dir() / "keywords" / re.sub(r"[^A-Za-z0-9.-]+", "_", self.where.split(" ")[-1])

    @contextmanager
    def connection(self):
        """A server that stops answering mid-session becomes one `StoreError` line, not a stack trace."""
        import httpx

        try:
            yield
        except httpx.TransportError as exc:
            raise StoreError(f"lost the connection to the {self.where} ({exc}); check that it is running, "
                             f"then try again") from None

    @contextmanager
    def writer(self, domain: str, timeout: float):
        """Hold the write lease of `domain` (embedded: of the whole store) for the `with` block; waits at most
        `timeout` seconds for another writer, then raises `IndexBusyError` naming it. Yields a `renew()`."""
        lease = _FileLease(self.index_dir, domain) if self.index_dir else _ServerLease(self.client, domain)
        lease.acquire(timeout, self.where)
        try:
            yield lease.renew
        finally:
            lease.release()


def open_store(index_dir: str | Path, host: str = "", port: int = 0, ssl: bool = False) -> Store:
    """The shared server at `host` (else `$CHROMA_HOST`), or the embedded store in `index_dir`; telemetry off."""
    import chromadb
    from chromadb.config import Settings

    host = host or os.environ.get("CHROMA_HOST", "")
    if not host:
        with folder_lock(Path(index_dir)):  # two processes creating one new store would both set up its tables
            client = chromadb.PersistentClient(path=str(index_dir), settings=Settings(anonymized_telemetry=False))
        return Store(client, f"index folder {index_dir}", Path(index_dir))
    port = port or _env_port()
    ssl = ssl or os.environ.get("CHROMA_SSL", "").lower() in ("1", "true", "yes")
    where = f"Chroma server {'https' if ssl else 'http'}://{host}:{port}"
    token = os.environ.get(TOKEN_ENV, "")
    auth = {"chroma_client_auth_provider": "chromadb.auth.token_authn.TokenAuthClientProvider",
            "chroma_client_auth_credentials": token} if token else {}
    try:
        client = chromadb.HttpClient(host=host, port=port, ssl=ssl,
                                     settings=Settings(anonymized_telemetry=False, **auth))
    except ValueError as exc:  # chromadb reports refusals and connection failures alike as ValueError
        raise _server_error(str(exc), where, bool(token)) from None
    return Store(client, where)


def _env_port() -> int:
    raw = os.environ.get("CHROMA_PORT", "8000")
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"CHROMA_PORT must be a port number (1-65535), got {raw!r}")
    return int(raw)


def _server_error(message: str, where: str, has_token: bool) -> StoreError:
    """A one-line error for a server that refused or did not answer; the token itself is never in it."""
    if any(code in message for code in ("401", "403", "Unauthorized", "Forbidden", "Authorization")):
        if has_token:
            return StoreError(f"the {where} refused the token in ${TOKEN_ENV}; set it to the team's current token")
        return StoreError(f"the {where} requires a token; set ${TOKEN_ENV} to the team's token")
    return StoreError(f"cannot reach the {where} (from $CHROMA_HOST/$CHROMA_PORT); start it with "
                      f"`chroma run --path DIR --host 0.0.0.0 --port PORT`, or unset CHROMA_HOST to use the local "
                      f"index folder")


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _busy(where: str, domain: str, holder: dict, timeout: float) -> IndexBusyError:
    who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "another process"
    what = f"domain '{holder.get('domain', domain)}'" if holder else "it"
    return IndexBusyError(f"the {where} is being written by {who} ({what}, since {holder.get('since', '?')}); "
                          f"waited {timeout:g} s: try again when it is done, or raise lock_timeout")


class _FileLease:
    """One writer per embedded store: an exclusive `flock`, with the holder's PID written in the file for others."""

    def __init__(self, index_dir: Path, domain: str) -> None:
        self.path, self.domain = index_dir / "writer.lock", domain
        self._fd: int | None = None

    def acquire(self, timeout: float, where: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise _busy(where, self.domain, holder, timeout) from None
                time.sleep(_POLL)
        stale = _read_holder(fd)
        if stale:  # a holder releases by emptying the file, so a leftover record means it was killed
            log.warning("cleared a stale write lock of process %s on %s (it is no longer running)",
                        stale.get("pid"), stale.get("host"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**_holder(), "domain": self.domain}).encode(), 0)
        self._fd = fd

    def renew(self) -> None:
        """Nothing to renew: the lock lasts as long as the process."""

    def release(self) -> None:
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}


class _ServerLease:
    """A domain's write lease on the server: records `<domain>:<n>`, of which the newest unexpired one holds it.

    To take the lease a writer adds record n+1; Chroma keeps the first record added under an id and ignores later
    adds, so when two writers race for the same n exactly one finds its own record there and wins.
    """

    def __init__(self, client, domain: str) -> None:
        self.domain, self.owner = domain, uuid.uuid4().hex
        self._me = {**_holder(), "domain": domain, "owner": self.owner}  # "since" stays the time it was taken
        self._leases = client.get_or_create_collection(_LEASES, embedding_function=None)
        self._id, self._n = "", -1

    def acquire(self, timeout: float, where: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            current = self._current()
            if current is None or current[1]["expires"] < time.time():
                n = current[1]["n"] + 1 if current else 0
                record_id = f"{self.domain}:{n:09d}"
                self._leases.add(ids=[record_id], embeddings=[[1.0]], metadatas=[self._record(n)])
                if self._leases.get(ids=[record_id])["metadatas"][0]["owner"] == self.owner:
                    if current is not None and current[1]["expires"] > 0:
                        log.warning("took over the expired write lease of process %s on %s",
                                    current[1]["pid"], current[1]["host"])
                    self._id, self._n = record_id, n
                    self._leases.delete(where={"$and": [{"domain": self.domain}, {"n": {"$lt": n}}]})
                    return
                continue
            if time.monotonic() >= deadline:
                raise _busy(where, self.domain, current[1], timeout)
            time.sleep(_POLL)

    def renew(self) -> None:
        """Push the expiry forward; a writer that let its lease lapse and lost it must stop."""
        current = self._current()
        if current is None or current[0] != self._id:
            raise IndexBusyError(f"lost the write lease of domain '{self.domain}' (not renewed for {LEASE_TTL:g} s, "
                                 f"and another writer took it); load the domain again to finish")
        self._leases.update(ids=[self._id], metadatas=[self._record(self._n)])

    def release(self) -> None:
        current = self._current()
        if current is not None and current[0] == self._id:
            self._leases.update(ids=[self._id], metadatas=[{**current[1], "expires": 0.0}])

    def _record(self, n: int) -> dict:
        return {**self._me, "n": n, "expires": time.time() + LEASE_TTL}

    def _current(self) -> tuple[str, dict] | None:
        res = self._leases.get(where={"domain": self.domain}, include=["metadatas"])
        records = sorted(zip(res["ids"], res["metadatas"]))
        return records[-1] if records else None
