"""The index against its folder, by Hypothesis: any sequence of adds, edits, deletes and re-loads keeps it exact."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import index_worker
from docbot.files import sha256_file
from docbot.rag.chunking import chunk_pages
from docbot.rag.documents import read_pages
from docbot.errors import DocumentError
from docbot.rag.index import DomainIndex
from docbot.rag.keywords import KeywordIndex
from docbot.rag.store import open_store

CHUNK_SIZE, CHUNK_OVERLAP = 200, 20  # small chunks, so that a few sentences already make several
NAMES = ["a.txt", "b.md", "sub/c.txt", "sub/deeper/d.md", "e f ü.txt"]
WORDS = ["kelp", "orbit", "velmora", "quorvane", "lantern", "ferry", "basalt", "ember", "tundra", "cobalt", "06:45",
         "35 mg", "the", "of", "and"]
TEXTS = st.lists(st.sampled_from(WORDS), max_size=120).map(" ".join)

# The same checks, in a process that never saw the store being written (a fresh Chroma client, no embedder).
FRESH_CHECK = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_index_state import expected_chunks
from docbot.rag.store import open_store
store = open_store(sys.argv[2])
res = store.client.get_collection("docbot-prop").get(include=["documents", "metadatas", "embeddings"])
problems = []
expected = expected_chunks(__import__("pathlib").Path(sys.argv[3]))
if sorted(res["ids"]) != sorted(expected):
    problems.append(f"ids {sorted(res['ids'])} != {sorted(expected)}")
collection = store.client.get_collection("docbot-prop")
for i, text, vector in zip(res["ids"], res["documents"], res["embeddings"]):
    first = collection.query(query_embeddings=[vector], n_results=1, include=["documents"])
    if first["documents"][0][0] != text:
        problems.append(f"{i} is not found first by its own embedding")
print(json.dumps(problems))
"""


def expected_chunks(root: Path) -> dict[str, str]:
    """chunk id -> text of every chunk the folder's files should have in the index."""
    chunks = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            pages = read_pages(path)
        except DocumentError:
            continue
        source = path.relative_to(root).as_posix()
        chunks |= {c.id: c.text for c in chunk_pages("prop", source, pages, CHUNK_SIZE, CHUNK_OVERLAP)}
    return chunks


@pytest.mark.slow
def test_index_stays_exact_through_any_edit_sequence(embedder):
    class IndexMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.work = Path(tempfile.mkdtemp(prefix="docbot-prop-"))
            self.docs = self.work / "docs"
            self.docs.mkdir()
            self.index = DomainIndex(open_store(self.work / "index"), "prop", embedder)
            self.synced = True

        @rule(name=st.sampled_from(NAMES), text=TEXTS)
        def write(self, name: str, text: str) -> None:
            """Add a file, or edit it if it is there."""
            path = self.docs / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            self.synced = False

        @precondition(lambda self: any(p.is_file() for p in self.docs.rglob("*")))
        @rule(data=st.data())
        def delete(self, data) -> None:
            path = data.draw(st.sampled_from(sorted(p for p in self.docs.rglob("*") if p.is_file())))
            path.unlink()
            self.synced = False

        @rule()
        def reload(self) -> None:
            report = self.index.sync(self.docs, CHUNK_SIZE, CHUNK_OVERLAP, progress=False)
            assert report.not_updated == ""
            self.synced = True

        @precondition(lambda self: self.synced)
        @invariant()
        def store_matches_folder(self) -> None:
            expected = expected_chunks(self.docs)
            stored = self.index.all_chunks()
            ids = [c.id for c in stored]
            assert len(ids) == len(set(ids)), "duplicate chunk ids"
            assert {c.id: c.text for c in stored} == expected  # chunk count and content match the files
            for chunk in stored:  # the manifest (hash per chunk) matches the files on disk
                assert chunk.file_hash == sha256_file(self.docs / chunk.source)
            for chunk in stored:  # each chunk's own text finds it first
                hit = self.index.query(embedder.embed([chunk.text])[0], 1)[0]
                assert hit.text == chunk.text, (chunk.id, hit.id)
            # the keyword index follows every add, edit and delete, and a second process loads what the first saved
            keywords = [KeywordIndex(self.index, self.work / "keywords") for _ in range(2)]
            for word in ("kelp", "velmora", "cobalt"):
                holding = sorted(i for i, text in expected.items() if word in re.findall(r"\w\w+", text.lower()))
                assert [sorted(k.search(word, 100)) for k in keywords] == [holding, holding], word
            assert not keywords[1].built

        def teardown(self) -> None:
            self.reload()
            run = subprocess.run([sys.executable, "-c", FRESH_CHECK, str(Path(__file__).parent),
                                  str(self.work / "index"), str(self.docs)],
                                 capture_output=True, text=True, timeout=120, cwd=index_worker.REPO)
            assert run.returncode == 0, run.stderr[-2000:]
            assert json.loads(run.stdout.strip().splitlines()[-1]) == []
            shutil.rmtree(self.work, ignore_errors=True)

    IndexMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=12, deadline=None,
                                              suppress_health_check=list(HealthCheck), database=None)
    IndexMachine.TestCase().runTest()
