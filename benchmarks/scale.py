"""Retrieval at scale: search latency, a new process's first question, reloads, memory and disk, by domain size.

    python benchmarks/scale.py [--sizes 1000 10000 100000] [--out benchmarks/_work/scale]

The corpus is real text: the documentation that Debian packages install under /usr/share/doc (changelogs,
READMEs, NEWS and copyright files of the installed packages, decompressed), cut into text files and indexed
through docbot's own `DomainIndex.sync` with the default chunking, so each size is about that many chunks.
Vectors go through the same store code; only the embedding itself is cached between runs, by the text's SHA-256
(`--out`/vectors.sqlite), since embedding 100,000 chunks on 2 cores takes about an hour.

Printed per size, and plotted to `--out`/scale.png:
- p50 and p95 search latency for vector, keyword and hybrid search over 100 questions, with the question's
  embedding computed beforehand (its own latency is reported apart);
- a new process's first and second question (embedding included), with the keyword index built (cold: no saved
  index) and loaded (warm: saved by the cold run);
- the time to load the unchanged domain again (every file hashed and compared), and its resident memory;
- the index's size on disk (Chroma, and the saved keyword index).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK_SIZE, CHUNK_OVERLAP = 1000, 100  # docbot's defaults
CHARS_PER_CHUNK = 900  # new text per chunk (the size less the overlap)

# Run in a new process: open the domain, ask two questions, report the times and the resident memory.
FIRST_QUESTION = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from docbot.rag.embeddings import Embedder
from docbot.rag.index import DomainIndex
from docbot.rag.retrieval import Retriever
from docbot.rag.store import open_store
embedder = Embedder()
embedder.embed(["warm up"])
t = time.perf_counter()
store = open_store(sys.argv[2])
index = DomainIndex(store, "scale", embedder)
sync = index.sync(sys.argv[3], 1000, 100, progress=False)
opened = time.perf_counter() - t
retriever = Retriever(index, True, store.keyword_cache)
times = []
for question in sys.argv[4:6]:
    t = time.perf_counter()
    retriever.search(question, 3)
    times.append(time.perf_counter() - t)
print(json.dumps({"reload_s": opened, "unchanged": sync.unchanged == sync.files, "first_s": times[0],
                  "second_s": times[1], "built": retriever.keywords.built,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


class CachedEmbedder:
    """The real embedder, with its vectors kept by the text's SHA-256 so another run need not embed again."""

    def __init__(self, embedder, path: Path) -> None:
        self.embedder, self.model_id, self.dimension = embedder, embedder.model_id, embedder.dimension
        self.word_pieces = embedder.word_pieces
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS v (h TEXT PRIMARY KEY, vec BLOB)")

    def embed(self, texts: list[str]):
        import numpy as np

        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        found = {}
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            found.update(self.db.execute(f"SELECT h, vec FROM v WHERE h IN ({','.join('?' * len(part))})", part))
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            vectors = self.embedder.embed([texts[i] for i in missing])
            rows = [(keys[i], v.astype(np.float32).tobytes()) for i, v in zip(missing, vectors)]
            self.db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?)", rows)
            self.db.commit()
            found.update(rows)
        return np.stack([np.frombuffer(found[k], dtype=np.float32) for k in keys]) if keys else \
            np.zeros((0, self.dimension), dtype=np.float32)


def write_corpus(folder: Path, chunks: int) -> int:
    """Text files from /usr/share/doc, in name order, until about `chunks` chunks' worth; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted, written, n = chunks * CHARS_PER_CHUNK, 0, 0
    for path in sorted(Path("/usr/share/doc").rglob("*")):
        if written >= wanted or not path.is_file() or path.is_symlink():
            continue
        try:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError, gzip.BadGzipFile, EOFError):
            continue
        if len(text) < 200 or "\x00" in text:
            continue
        text = text[:wanted - written]
        n += 1
        (folder / f"{n:06d}_{path.parent.name}_{path.name}.txt".replace(".gz.txt", ".txt")).write_text(text)
        written += len(text)
    return n


def percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values) * 1000, values[int(0.95 * (len(values) - 1))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "_work" / "scale"))
    args = parser.parse_args()

    from docbot.rag.embeddings import Embedder
    from docbot.rag.index import DomainIndex
    from docbot.rag.keywords import KeywordIndex
    from docbot.rag.retrieval import Retriever
    from docbot.rag.store import open_store

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    embedder = CachedEmbedder(Embedder(), out / "vectors.sqlite")
    rows = []
    for size in args.sizes:
        work = out / f"domain_{size}"
        shutil.rmtree(work, ignore_errors=True)
        files = write_corpus(work / "docs", size)
        t = time.perf_counter()
        store = open_store(work / "index")
        index = DomainIndex(store, "scale", embedder)
        report = index.sync(work / "docs", CHUNK_SIZE, CHUNK_OVERLAP, progress=True)
        built = time.perf_counter() - t
        chunks = index.all_chunks()
        rng = random.Random(0)
        questions = [" ".join(c.text.split()[:12]) for c in rng.sample(chunks, min(100, len(chunks)))]
        t = time.perf_counter()
        vectors = embedder.embedder.embed(questions)
        embed_ms = (time.perf_counter() - t) / len(questions) * 1000
        retriever = Retriever(index, True, store.keyword_cache)
        keywords = KeywordIndex(index, None)
        keywords.search("warm", 3)
        timings = {"vector": [], "keyword": [], "hybrid": []}
        for question, vector in zip(questions, vectors):
            for mode, run in (("vector", lambda: index.query(vector, 3)),
                              ("keyword", lambda: keywords.search(question, 20)),
                              ("hybrid", lambda: retriever.search(question, 3, embedding=vector))):
                t = time.perf_counter()
                run()
                timings[mode].append(time.perf_counter() - t)
        runs = {}
        for cache in ("cold", "warm"):
            if cache == "cold":
                shutil.rmtree(store.keyword_cache, ignore_errors=True)
            done = subprocess.run([sys.executable, "-c", FIRST_QUESTION, str(ROOT), str(work / "index"),
                                   str(work / "docs"), questions[0], questions[1]],
                                  capture_output=True, text=True, timeout=3600)
            runs[cache] = json.loads(done.stdout.strip().splitlines()[-1])
        disk = {name: sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
                for name, path in (("chroma", work / "index"), ("keywords", store.keyword_cache))}
        row = {"size": size, "chunks": len(chunks), "files": files, "index_s": round(built, 1),
               "added": len(report.added), "embed_question_ms": round(embed_ms, 2),
               **{f"{m}_p50_ms": round(percentiles(v)[0], 2) for m, v in timings.items()},
               **{f"{m}_p95_ms": round(percentiles(v)[1], 2) for m, v in timings.items()},
               "first_question": runs, "disk_mb": {k: round(v - (disk["keywords"] if k == "chroma" else 0), 1)
                                                   for k, v in disk.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "scale.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{'chunks':>8} {'vector p50/p95':>15} {'keyword p50/p95':>16} {'hybrid p50/p95':>15} "
          f"{'1st-2nd q cold':>15} {'1st-2nd q warm':>15} {'reload':>7} {'RSS':>7} {'disk':>8}")
    for r in rows:
        gap = {c: (r["first_question"][c]["first_s"] - r["first_question"][c]["second_s"]) for c in ("cold", "warm")}
        print(f"{r['chunks']:>8} {r['vector_p50_ms']:>7.1f}/{r['vector_p95_ms']:<7.1f}"
              f"{r['keyword_p50_ms']:>8.1f}/{r['keyword_p95_ms']:<7.1f}{r['hybrid_p50_ms']:>8.1f}/"
              f"{r['hybrid_p95_ms']:<7.1f}{gap['cold']:>12.2f} s{gap['warm']:>12.2f} s"
              f"{r['first_question']['warm']['reload_s']:>6.1f} s{r['first_question']['warm']['rss_mb']:>5.0f} MB"
              f"{sum(r['disk_mb'].values()):>6.0f} MB")
    plot(rows, out / "scale.png")
    print(f"\n{out / 'scale.json'}, {out / 'scale.png'}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = [r["chunks"] for r in rows]
    for mode in ("vector", "keyword", "hybrid"):
        for q, style in (("p50", "-o"), ("p95", "--x")):
            ax.plot(sizes, [r[f"{mode}_{q}_ms"] for r in rows], style, label=f"{mode} {q}")
    ax.set_xscale("log")
    ax.set_xlabel("chunks in the domain")
    ax.set_ylabel("search latency, ms (question embedded beforehand)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
