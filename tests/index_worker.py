"""A docbot process for crash, lock and load tests: index, query or churn a domain, as a user's process would.

    python tests/index_worker.py index DOCS_DIR INDEX_DIR DOMAIN [LOCK_TIMEOUT]
    python tests/index_worker.py query INDEX_DIR DOMAIN SECONDS
    python tests/index_worker.py churn DOCS_DIR INDEX_DIR DOMAIN SECONDS   (edit 2 files and re-load, repeatedly)

Each prints `ready` once its models are loaded, starts on a `go` line on stdin (so that a test can time a kill to
land during the work itself, or start several at once), and ends with one JSON line saying what it did. The
store is the embedded one in INDEX_DIR unless $CHROMA_HOST names a server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docbot import ConfigurableDocBot  # noqa: E402
from docbot.rag.embeddings import Embedder  # noqa: E402

QUESTIONS = ["What is the dose?", "Who leads the team?", "Where is the store room?", "When does it open?"]


def index(docs: str, index_dir: str, domain: str, lock_timeout: float = 30.0) -> dict:
    bot = _ready_bot(index_dir, lock_timeout)
    start = time.perf_counter()
    report = bot.load_domain(domain, docs, progress=False)
    return {"seconds": time.perf_counter() - start, "chunks": report.chunks, "not_updated": report.not_updated,
            "skipped": report.skipped}


def query(index_dir: str, domain: str, seconds: float) -> dict:
    """Ask retrieval questions for `seconds`, reopening the domain now and then to see other processes' writes."""
    bot = _ready_bot(index_dir, 0.0)
    latencies, errors = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            if len(latencies) % 20 == 0:  # reopen now and then, as the store's newest chunks come in
                bot.load_domain(domain, Path(index_dir) / "no-documents-here", progress=False)
                start = time.perf_counter()
            bot.retrieve(QUESTIONS[len(latencies) % len(QUESTIONS)], k=3)
        except Exception as exc:  # noqa: BLE001 (counted: the load test's goal is zero)
            errors.append(_described(exc))
        latencies.append(time.perf_counter() - start)
    return {"queries": len(latencies), "latencies": latencies, "errors": errors}


def churn(docs: str, index_dir: str, domain: str, seconds: float) -> dict:
    """Keep a domain changing: edit two files and load it again, for `seconds` (a teammate at work)."""
    bot = _ready_bot(index_dir, 600)
    files = sorted(Path(docs).glob("*.txt"))
    loads, errors, end = 0, [], time.monotonic() + seconds
    while time.monotonic() < end:
        for path in files[loads % len(files):][:2]:
            with path.open("a", encoding="utf-8") as fh:
                fh.write(f"Revision {loads} adds this sentence.\n")
        try:
            bot.load_domain(domain, docs, progress=False)
        except Exception as exc:  # noqa: BLE001 (counted: the load test's goal is zero)
            errors.append(_described(exc))
        loads += 1
    return {"loads": loads, "errors": errors}


def _described(exc: Exception) -> str:
    """The error and where it was raised (docbot's innermost frame), so a rare failure under load can be found."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/docbot/" in f.filename] or \
        traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _ready_bot(index_dir: str, lock_timeout: float) -> ConfigurableDocBot:
    """A bot with its embedding model loaded; says `ready`, then waits for `go`."""
    bot = ConfigurableDocBot(provider="transformers", index_dir=index_dir, lock_timeout=lock_timeout)
    Embedder(bot.config.embedding_model).embed(["warm up"])  # the model is cached: the bot's load is free
    print("ready", flush=True)
    sys.stdin.readline()
    return bot


def _main() -> None:
    kind, *args = sys.argv[1:]
    if kind == "index":
        result = index(args[0], args[1], args[2], *(float(a) for a in args[3:]))
    elif kind == "churn":
        result = churn(args[0], args[1], args[2], float(args[3]))
    else:
        result = query(args[0], args[1], float(args[2]))
    print(json.dumps(result), flush=True)


def start(kind: str, *args: str, env: dict | None = None, hold: bool = False) -> subprocess.Popen:
    """Start a worker and wait until it has loaded its models; it goes on at once, or at `go()` with `hold`."""
    proc = subprocess.Popen([sys.executable, __file__, kind, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"worker did not start: {line}{proc.stderr.read()[-3000:]}")
    if not hold:
        go(proc)
    return proc


def go(*procs: subprocess.Popen) -> None:
    """Let held workers start their work, all at once."""
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()


def finish(proc: subprocess.Popen, timeout: float = 600) -> dict:
    """The worker's JSON result once it exits; its stderr if it failed."""
    out, err = proc.communicate(timeout=timeout)  # (closes stdin too)
    if proc.returncode != 0:
        raise RuntimeError(f"worker exited {proc.returncode}: {err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def store_state(index_dir: Path, domain: str) -> dict[str, tuple]:
    """Every chunk of a domain as stored: id -> (text, metadata, embedding)."""
    from docbot.rag.store import open_store

    collection = open_store(index_dir).client.get_collection(f"docbot-{domain}")
    res = collection.get(include=["documents", "metadatas", "embeddings"])
    return {i: (d, m, e) for i, d, m, e in zip(res["ids"], res["documents"], res["metadatas"], res["embeddings"])}


def crash_round(docs: Path, index_dir: Path, domain: str, kill_after: float, reference: dict, embedder) -> dict:
    """Index `docs` in a worker, SIGKILL it `kill_after` seconds into the work, then check in this process that
    the store opens and answers from every file it finished, and that a re-sync converges to `reference`."""
    from docbot.files import sha256_file
    from docbot.rag.index import DomainIndex
    from docbot.rag.store import open_store

    proc = start("index", docs, index_dir, domain)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    problems = []
    index = DomainIndex(open_store(index_dir), domain, embedder)  # opens, or creates if killed before it did
    first_chunks: dict[str, object] = {}
    for chunk in index.all_chunks():
        first_chunks.setdefault(chunk.source, chunk)
    stored = index._stored_files()  # noqa: SLF001 (the manifest, as sync sees it)
    complete = [source for source, entry in stored.items() if entry.matches(sha256_file(docs / source), "1000/100")]
    for source in complete:
        chunk = first_chunks[source]
        hit = index.query(embedder.embed([chunk.text])[0], 1)
        if not hit or hit[0].text != chunk.text:
            problems.append(f"finished file {source} does not answer: got {hit[:1]}")
    index.sync(docs, 1000, 100, progress=False)
    state = store_state(index_dir, domain)
    if {i: s[:2] for i, s in state.items()} != {i: s[:2] for i, s in reference.items()}:
        problems.append(f"re-sync did not converge: {len(state)} chunks vs {len(reference)} uninterrupted")
    elif any(float(np.dot(state[i][2], reference[i][2])) < 0.999 for i in state):
        problems.append("re-sync converged to different embeddings")
    return {"killed_at": kill_after, "complete_files": len(complete), "chunks": len(state), "problems": problems}


if __name__ == "__main__":
    _main()
