"""A team on one shared Chroma server: 4 processes asking questions while 1 keeps re-indexing, for a fixed time.

    python benchmarks/load.py [--seconds 60] [--readers 4] [--files 40]

Starts a real `chroma run` behind the tests' nginx token gate (tests/chroma_server.py; needs `chroma` from the
chromadb package and nginx, which `scripts/setup.sh --test` installs), indexes `--files` text files as domain
"corpus", then runs `--readers` docbot processes that retrieve (k=3, hybrid, reopening the domain every 20
questions to see new chunks) and one that edits two files and re-loads the domain in a loop, all for `--seconds`
once every process has loaded its models. Prints queries/s, p50/p95 retrieval latency and errors. Goal: zero errors.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from chroma_server import ChromaServer  # noqa: E402
from conftest import write_corpus  # noqa: E402
from index_worker import finish, go, start  # noqa: E402

from docbot import ConfigurableDocBot  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--files", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="docbot-load-") as tmp, ChromaServer(Path(tmp) / "server") as server:
        os.environ.update(CHROMA_HOST="127.0.0.1", CHROMA_PORT=str(server.port), CHROMA_TOKEN=server.token)
        docs = write_corpus(Path(tmp) / "docs", files=args.files)
        report = ConfigurableDocBot(provider="transformers").load_domain("corpus", docs, progress=False)
        print(f"shared server at 127.0.0.1:{server.port} (token required); {report}", flush=True)
        unused = Path(tmp) / "unused"  # the server holds the index: no local folder is used
        readers = [start("query", unused, "corpus", args.seconds, hold=True) for _ in range(args.readers)]
        writer = start("churn", docs, unused, "corpus", args.seconds, hold=True)
        go(*readers, writer)  # all of them run during the same `--seconds`
        churn = finish(writer)
        reads = [finish(r) for r in readers]
    latencies = sorted(x for r in reads for x in r["latencies"])
    errors = [e for r in reads for e in r["errors"]] + churn["errors"]
    quantiles = statistics.quantiles(latencies, n=100)
    print(f"{args.readers} readers x {args.seconds:g} s: {len(latencies)} questions, "
          f"{len(latencies) / args.seconds:.1f} questions/s in all")
    print(f"retrieval latency: p50 {quantiles[49] * 1000:.0f} ms, p95 {quantiles[94] * 1000:.0f} ms")
    print(f"writer: {churn['loads']} re-loads of the domain (2 files edited each time)")
    print(f"errors: {len(errors)}" + "".join(f"\n  {e}" for e in errors[:10]))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
