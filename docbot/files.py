"""Small file helpers: atomic writes (a reader sees the old bytes or the new, never a torn file), hashing, JSONL."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DocbotError

__all__ = ["write_bytes_atomic", "write_json_atomic", "read_json", "sha256_file", "jsonl_rows", "folder_lock",
           "fsync_dir", "cache_dir"]


def cache_dir() -> Path:
    """docbot's per-user cache: `$DOCBOT_CACHE`, else `~/.cache/docbot` (rebuildable things only)."""
    return Path(os.environ.get("DOCBOT_CACHE") or Path.home() / ".cache" / "docbot")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync it, then `os.replace` it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold `<folder>/.docbot.lock` (an `flock`, released by the kernel if the process dies) for a short step that
    two processes must not take at once: choosing a new file name there and writing it, or creating a new store."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".docbot.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def write_json_atomic(path: Path, obj: object) -> None:
    """Pretty JSON, written atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def read_json(path: Path, remedy: str) -> dict:
    """A JSON object from a file docbot wrote; a damaged one is an error naming the file, the place and `remedy`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DocbotError(f"{path}: cannot be read ({exc.strerror or exc}); {remedy}") from exc
    except UnicodeDecodeError as exc:
        raise DocbotError(f"{path}: not UTF-8 text (byte {exc.start + 1}); {remedy}") from exc
    except json.JSONDecodeError as exc:
        raise DocbotError(f"{path}:{exc.lineno}: damaged JSON ({exc.msg}); {remedy}") from exc
    if not isinstance(data, dict):
        raise DocbotError(f"{path}: expected a JSON object, found {type(data).__name__}; {remedy}")
    return data


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks so large files stay out of memory."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def jsonl_rows(data: bytes) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line of a JSONL file's bytes; a line that is not UTF-8 JSON
    gives its `ValueError` (`UnicodeDecodeError` or `json.JSONDecodeError`) as the value, so each reader reports it
    as file:line in its own way. Lines are split as bytes: `str.splitlines` would also end a line inside a string
    at U+2028 or U+0085, which `json.dumps(ensure_ascii=False)` writes as they are."""
    for no, line in enumerate(data.splitlines(), start=1):
        if line.strip():
            try:
                yield no, json.loads(line.decode("utf-8"))
            except ValueError as exc:
                yield no, exc


def fsync_dir(folder: Path) -> None:
    """Persist a rename: the directory entry itself must reach the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
