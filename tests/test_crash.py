"""Crashes and a second process: nothing a user owns is lost or corrupted, and nobody hangs.

Workers are real docbot processes (tests/index_worker.py) on a real Chroma store; they are SIGKILLed, not asked.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import index_worker
from conftest import write_corpus, write_facts_domain
from docbot import ConfigurableDocBot, IndexBusyError, IndexMismatchError

ROUNDS = 5  # benchmarks/crash.py runs 20


@pytest.mark.slow
def test_index_killed_at_random_moments_opens_answers_and_converges(corpus, tmp_path, embedder):
    docs, reference, seconds = corpus
    rng = random.Random(7)
    rounds = [index_worker.crash_round(docs, tmp_path / f"round{i}", "corpus", rng.uniform(0, seconds * 1.2),
                                       reference, embedder) for i in range(ROUNDS)]
    assert [r["problems"] for r in rounds] == [[]] * ROUNDS, rounds
    assert len(reference) == 320 and all(r["chunks"] == 320 for r in rounds)


def test_atomic_writes_killed_midway_leave_old_or_new_bytes(tmp_path):
    """What datasets, notebooks, manifests and the registry are written with, killed while writing 4 MB files."""
    target = tmp_path / "data.jsonl"
    old, new = b"o" * 4_000_000, b"n" * 4_000_000
    target.write_bytes(old)
    writer = (f"import sys; sys.path.insert(0, {str(index_worker.REPO)!r})\n"
              "from docbot.files import write_bytes_atomic\nfrom pathlib import Path\n"
              f"print('ready', flush=True)\nwhile True:\n"
              f"    write_bytes_atomic(Path({str(target)!r}), b'n' * 4_000_000)\n"
              f"    write_bytes_atomic(Path({str(target)!r}), b'o' * 4_000_000)\n")
    rng = random.Random(3)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert target.read_bytes() in (old, new)


def test_processes_opening_one_new_index_folder_at_once_all_succeed(tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(index_worker.REPO)!r})\n"
            "from docbot.rag.store import open_store\n"
            "print('ready', flush=True); sys.stdin.readline()\n"
            "open_store(sys.argv[1]).client.heartbeat()\n")
    for attempt in range(3):  # a race: a few tries, each on a new folder, make a regression show
        procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"index{attempt}")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
        assert all(p.stdout.readline().strip() == "ready" for p in procs)
        index_worker.go(*procs)  # all of them create the store's tables at the same moment
        outcomes = [(p.wait(60), p.stderr.read()[-300:]) for p in procs]
        assert [rc for rc, _ in outcomes] == [0] * 6, outcomes


def _hold_write_lease(index_dir, domain: str) -> subprocess.Popen:
    """Another process that takes the store's write lease and keeps it until it is killed."""
    code = (f"import sys, time; sys.path.insert(0, {str(index_worker.REPO)!r})\n"
            "from docbot.rag.store import open_store\n"
            f"with open_store({str(index_dir)!r}).writer({domain!r}, 0):\n"
            "    print('ready', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_second_writer_names_the_holder_readers_go_on_and_a_killed_holder_frees_the_lock(tmp_path, models_dir,
                                                                                         caplog):
    docs = write_facts_domain(tmp_path / "Documents" / "Velmora")
    bot = ConfigurableDocBot(provider="transformers", documents_dir=str(tmp_path / "Documents"),
                             index_dir=str(tmp_path / "index"), models_dir=str(models_dir), lock_timeout=0.5)
    bot.load_domain("velmora", progress=False)
    holder = _hold_write_lease(tmp_path / "index", "legal")
    try:
        # nothing to write: opening and answering take no lock (had it waited, not_updated would name the holder)
        assert bot.load_domain("velmora", progress=False).not_updated == ""
        assert bot.retrieve("Quorvane dose")[0].file == "handbook.pdf"
        # a change to write: after lock_timeout the index is read as it stands, and the holder is named
        (docs / "parking.md").write_text("# Parking\n\nStaff park on level minus two.\n", encoding="utf-8")
        report = bot.load_domain("velmora", progress=False)
        assert f"process {holder.pid}" in report.not_updated and "domain 'legal'" in report.not_updated
        assert f"process {holder.pid}" in str(report)
        assert bot.retrieve("Quorvane dose")[0].file == "handbook.pdf"
        # a domain with nothing indexed yet cannot be read as it stands: one clear error
        write_facts_domain(tmp_path / "Documents" / "Other")
        with pytest.raises(IndexBusyError, match=f"process {holder.pid} on .*waited 0.5 s"):
            bot.load_domain("other", progress=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with caplog.at_level(logging.WARNING, logger="docbot"):
        report = bot.load_domain("velmora", progress=False)
    assert report.added == ["parking.md"] and report.not_updated == ""
    assert f"stale write lock of process {holder.pid}" in caplog.text


def test_a_rebuild_with_another_model_swaps_in_only_when_complete(tmp_path, models_dir, embedder, monkeypatch):
    write_facts_domain(tmp_path / "Documents" / "Velmora")
    other = tmp_path / "minilm-copy"  # the same weights under another name: another embedding model to docbot
    embedder._model.save(str(other))
    dirs = {"documents_dir": str(tmp_path / "Documents"), "index_dir": str(tmp_path / "index"),
            "models_dir": str(models_dir)}
    reader = ConfigurableDocBot(provider="transformers", **dirs)
    reader.load_domain("velmora", progress=False)
    switcher = ConfigurableDocBot(provider="transformers", embedding_model=str(other), **dirs)
    with pytest.raises(IndexMismatchError, match=r"reindex velmora"):
        switcher.load_domain("velmora", progress=False)

    def interrupted(texts):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:  # Ctrl-C halfway through the rebuild: the old index stays as it was
        patch.setattr(switcher.embedder, "embed", interrupted)
        with pytest.raises(KeyboardInterrupt):
            switcher.reindex("velmora", progress=False)
    assert reader.retrieve("Quorvane dose")[0].file == "handbook.pdf"
    assert reader.domains() == ["velmora"]

    assert len(switcher.reindex("velmora", progress=False).added) == 3
    assert switcher.domain == "velmora" and switcher.retrieve("Quorvane dose")[0].file == "handbook.pdf"
    with pytest.raises(IndexMismatchError, match="minilm-copy"):  # the reader's model no longer fits the index
        reader.retrieve("Quorvane dose")
    same_model = ConfigurableDocBot(provider="transformers", embedding_model=str(other), **dirs)
    same_model.load_domain("velmora", progress=False)
    switcher.reindex(progress=False)  # rebuilt again with the same model: its readers just reopen it
    assert same_model.retrieve("Quorvane dose")[0].file == "handbook.pdf"


@pytest.mark.slow
def test_two_processes_index_one_store_at_once_while_a_third_reads(corpus, tmp_path):
    docs, reference, _ = corpus
    index_dir = tmp_path / "index"
    env = {k: v for k, v in os.environ.items() if k != "CHROMA_HOST"}
    first = index_worker.start("index", docs, index_dir, "corpus", 600, env=env, hold=True)
    second = index_worker.start("index", docs, index_dir, "corpus", 600, env=env, hold=True)
    index_worker.go(first, second)
    results = [index_worker.finish(p) for p in (first, second)]
    # one of them embedded everything; the other waited for it and then found nothing left to do
    assert sorted(r["chunks"] for r in results) == [320, 320] and all(not r["not_updated"] for r in results)
    state = index_worker.store_state(index_dir, "corpus")
    assert {i: s[:2] for i, s in state.items()} == {i: s[:2] for i, s in reference.items()}
    # a reader asks questions all through another process's indexing, and never sees an error
    reader = index_worker.start("query", index_dir, "corpus", 10, env=env, hold=True)
    writer = index_worker.start("index", write_corpus(tmp_path / "more", files=20, seed=1), index_dir, "more",
                                600, env=env, hold=True)
    index_worker.go(reader, writer)
    assert index_worker.finish(writer)["chunks"] == 160
    read = index_worker.finish(reader)
    assert read["queries"] > 20 and read["errors"] == [], json.dumps(read["errors"][:3])
