"""A team's shared index: a real `chroma run` server behind a token gate (tests/chroma_server.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import index_worker
from chroma_server import ChromaServer, free_port
from conftest import write_facts_domain
from docbot import ConfigurableDocBot, IndexBusyError, StoreError
from docbot.rag import store as store_module
from docbot.rag.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ChromaServer(tmp_path_factory.mktemp("chroma-server")) as running:
        yield running


@pytest.fixture
def on_server(server, monkeypatch):
    """This process (and the workers it starts) pointed at the server, as README tells a team to do."""
    monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMA_PORT", str(server.port))
    monkeypatch.setenv("CHROMA_TOKEN", server.token)
    return server


def test_domains_sync_and_search_work_unchanged_on_the_server(on_server, tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("DOCBOT_CACHE", str(tmp_path / "my-cache"))  # each machine keeps its own keyword index
    docs = write_facts_domain(tmp_path / "Documents" / "Velmora")
    bot = ConfigurableDocBot(provider="transformers", documents_dir=str(tmp_path / "Documents"),
                             index_dir=str(tmp_path / "index"), models_dir=str(models_dir))
    first = bot.load_domain("velmora", progress=False)
    assert (first.files, len(first.added), first.skipped) == (3, 3, [])
    assert bot.retrieve("Who is the chief pharmacist?")[0].file == "team/staff.md"
    assert bot.retrieve("Brindleweed", k=1)[0].file == "storage.txt"  # found by its name: the keyword side
    (docs / "storage.txt").unlink()
    (docs / "parking.md").write_text("# Parking\n\nStaff park on level minus two of the Velmora garage.\n")
    second = bot.load_domain("velmora", progress=False)
    assert (second.added, second.removed, second.unchanged) == (["parking.md"], ["storage.txt"], 2)
    assert bot.retrieve("Where do staff park?")[0].file == "parking.md"
    assert "velmora" in bot.domains()
    assert not (tmp_path / "index").exists()  # nothing was written locally
    assert bot.retrieve("Brindleweed", k=1)[0].file != "storage.txt"  # the keyword index followed the change
    # a teammate on another machine, without the documents, asks questions about the shared domain
    monkeypatch.setenv("DOCBOT_CACHE", str(tmp_path / "teammate-cache"))
    keyword_builds = []
    for _ in range(2):  # the teammate's first process builds the keyword index, the next one loads it
        teammate = ConfigurableDocBot(provider="transformers", documents_dir=str(tmp_path / "elsewhere"),
                                      models_dir=str(models_dir))
        report = teammate.load_domain("velmora", progress=False)
        assert report.chunks == second.chunks and "no folder" in report.not_updated
        assert teammate.retrieve("Where do staff park?")[0].file == "parking.md"
        keyword_builds.append(teammate._retriever.keywords.built)
    assert keyword_builds == [True, False]
    assert [p.name for p in (tmp_path / "teammate-cache" / "keywords").iterdir()] == [f"http_127.0.0.1_{on_server.port}"]


def test_missing_or_wrong_token_is_one_clear_line_that_never_shows_a_token(server, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMA_PORT", str(server.port))
    monkeypatch.delenv("CHROMA_TOKEN", raising=False)
    with pytest.raises(StoreError, match=r"requires a token; set \$CHROMA_TOKEN"):
        open_store(tmp_path)
    monkeypatch.setenv("CHROMA_TOKEN", "wrong-token-123")
    with pytest.raises(StoreError, match=r"refused the token in \$CHROMA_TOKEN") as refused:
        open_store(tmp_path)
    assert "wrong-token-123" not in str(refused.value) and "wrong-token-123" not in caplog.text
    # the chatbot says it in one red line and exits, with no traceback and no token
    write_facts_domain(tmp_path / "Documents" / "Velmora")
    monkeypatch.setenv("DOCBOT_HISTORY", str(tmp_path / "history"))
    run = subprocess.run([sys.executable, str(index_worker.REPO / "rag_chat.py"), "--provider", "transformers"],
                         cwd=tmp_path, input="", capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "refused the token" in run.stderr and "wrong-token-123" not in run.stdout + run.stderr
    monkeypatch.setenv("CHROMA_PORT", str(free_port()))
    with pytest.raises(StoreError, match="cannot reach the Chroma server"):
        open_store(tmp_path)


def test_a_server_that_stops_answering_mid_session_is_one_clear_error(tmp_path, monkeypatch, models_dir):
    with ChromaServer(tmp_path / "server") as own:
        monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
        monkeypatch.setenv("CHROMA_PORT", str(own.port))
        monkeypatch.setenv("CHROMA_TOKEN", own.token)
        bot = ConfigurableDocBot(provider="transformers", models_dir=str(models_dir))
        bot.load_domain("velmora", write_facts_domain(tmp_path / "Velmora"), progress=False)
        assert bot.retrieve("Quorvane dose")[0].file == "handbook.pdf"
    with pytest.raises(StoreError, match=rf"lost the connection to the Chroma server http://127.0.0.1:{own.port} "):
        bot.retrieve("Quorvane dose")


def test_a_domain_lease_names_its_holder_and_lapses_when_not_renewed(on_server, monkeypatch, caplog):
    store = open_store("unused")
    holder = store.writer("leased", 0)
    renew_holder = holder.__enter__()
    with pytest.raises(IndexBusyError, match=f"process {os.getpid()} on .*domain 'leased'"):
        with store.writer("leased", 0.3):
            pass
    with store.writer("other", 0):  # leases are per domain on a server
        pass
    monkeypatch.setattr(store_module, "LEASE_TTL", 1.0)
    renew_holder()  # now expires in 1 s, and the holder stops renewing (as a crashed process would)
    with caplog.at_level(logging.WARNING, logger="docbot"), store.writer("leased", 10) as renew_taker:
        renew_taker()
        assert "took over the expired write lease" in caplog.text
        with pytest.raises(IndexBusyError, match="lost the write lease"):
            renew_holder()
    holder.__exit__(None, None, None)  # releasing a lease it lost leaves the new holder's record alone
    with store.writer("leased", 0):
        pass


def test_several_processes_index_and_query_one_server_at_once(on_server, corpus, tmp_path, models_dir):
    docs, reference, _ = corpus
    facts = write_facts_domain(tmp_path / "Documents" / "Velmora")
    ConfigurableDocBot(provider="transformers", models_dir=str(models_dir)).load_domain("velmora", facts,
                                                                                      progress=False)
    reader = index_worker.start("query", tmp_path / "unused", "velmora", 15, hold=True)
    writers = [index_worker.start("index", docs, tmp_path / "unused", "corpus", 600, hold=True) for _ in range(2)]
    index_worker.go(reader, *writers)
    results = [index_worker.finish(w) for w in writers]
    read = index_worker.finish(reader)
    assert [r["chunks"] for r in results] == [320, 320] and all(not r["not_updated"] for r in results)
    assert read["queries"] > 20 and read["errors"] == [], read["errors"][:3]
    state = index_worker.store_state(tmp_path / "unused", "corpus")
    assert {i: s[:2] for i, s in state.items()} == {i: s[:2] for i, s in reference.items()}
