"""Crash safety of indexing: a docbot process is SIGKILLed at random moments while it loads a domain.

    python benchmarks/crash.py [--rounds 20] [--files 40] [--seed 11]

Each round starts a real docbot process (tests/index_worker.py) that indexes `--files` text files (8 chunks each;
embedding calls are sized to take about 2 s) into a fresh embedded Chroma store, kills it after a random delay drawn
uniformly from 0 to 1.2x the time an uninterrupted load takes, then, in this process, opens the store, checks that
every file whose indexing completed answers (its first chunk's text retrieves that chunk first), loads the domain
again, and compares the result with an uninterrupted load: same chunk ids, texts and metadata, embeddings with
cosine >= 0.999. The suite runs 5 such rounds (tests/test_crash.py); this runs more.

Goal (the issue): no problem in any round. Also printed: the work a kill during the load lost, the time spent
beyond what the files finished before it took (progress taken as even over the files).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import write_corpus  # noqa: E402
from index_worker import crash_round, store_state  # noqa: E402

from docbot.rag.embeddings import Embedder  # noqa: E402
from docbot.rag.index import DomainIndex  # noqa: E402
from docbot.rag.store import open_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    embedder = Embedder("all-MiniLM-L6-v2")
    with tempfile.TemporaryDirectory(prefix="docbot-crash-") as tmp:
        work = Path(tmp)
        docs = write_corpus(work / "docs", files=args.files)
        start = time.perf_counter()
        DomainIndex(open_store(work / "reference"), "corpus", embedder).sync(docs, 1000, 100, progress=False)
        seconds = time.perf_counter() - start
        reference = store_state(work / "reference", "corpus")
        print(f"uninterrupted load: {len(reference)} chunks from {args.files} files in {seconds:.1f} s")
        rng = random.Random(args.seed)
        failed, lost = 0, []
        for i in range(args.rounds):
            r = crash_round(docs, work / f"round{i}", "corpus", rng.uniform(0, 1.2 * seconds), reference, embedder)
            failed += bool(r["problems"])
            if r["killed_at"] < seconds:  # work lost: the time spent beyond what the finished files took
                lost.append(max(0.0, r["killed_at"] - seconds * r["complete_files"] / args.files))
            print(f"round {i + 1:2d}: killed at {r['killed_at']:5.2f} s, {r['complete_files']:2d} files complete "
                  f"before the kill, {r['chunks']} chunks after re-sync: "
                  f"{'; '.join(r['problems']) or 'ok'}", flush=True)
    print(f"{args.rounds - failed}/{args.rounds} rounds converged with every finished file answering")
    if lost:
        print(f"work lost to a kill during the load ({len(lost)} rounds): mean {sum(lost) / len(lost):.1f} s, "
              f"max {max(lost):.1f} s of a {seconds:.1f} s load")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
