"""Shared fixtures: the real SmolLM2 model, converted once and reused across test runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.injection import write_pdf  # noqa: F401 (the tests' PDF writer, shared with the benchmark)

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DOCBOT_CONFIG", str(REPO / "tests" / "machinery_settings.py"))  # SmolLM2 answers (fast)


class ScriptedModel:
    """A provider that streams a fixed text in small pieces, as a looping small model would: what the guards and
    the evidence check get to see, without a model's randomness in the test."""

    name = "scripted"

    def __init__(self, text: str, piece: int = 4) -> None:
        self.model, self.text, self.piece, self.sent = "scripted", text, piece, 0

    def stream(self, messages, max_new_tokens):
        for i in range(0, len(self.text), self.piece):
            self.sent += 1
            yield self.text[i:i + self.piece]

    def __str__(self) -> str:
        return f"{self.name}:{self.model}"


def packaged_model_path(name: str) -> str:
    """Folder of a packaged model, converted; kept in DOCBOT_TEST_MODELS or the repo's models/ (as the product
    does), so the GGUF conversion (~25 s for SmolLM2, ~80 s for Qwen) happens once per machine, not once per run."""
    from docbot.providers.base_models import resolve_base_model

    return resolve_base_model(name, os.environ.get("DOCBOT_TEST_MODELS") or REPO / "models")


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    return packaged_model_path("SmolLM2-135M-Instruct")


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """The in-process provider for SmolLM2, loaded once per session."""
    from docbot.providers.transformers_local import TransformersProvider

    return TransformersProvider(smollm2_path)


# Invented facts a small model cannot know, spread over a PDF (two pages), a text file and a Markdown file:
# (question, the fact the answer must contain, file, page)
FACTS = [
    ("What time does the Velmora clinic open on weekdays?", "06:45", "handbook.pdf", 1),
    ("What is the maximum daily dose of Quorvane?", "35 mg", "handbook.pdf", 2),
    ("At what temperature must the Brindleweed vaccine be stored?", "3 degrees", "storage.txt", None),
    ("Who is the chief pharmacist of the Velmora clinic?", "Odalys Penhallow", "team/staff.md", None),
    ("What is the emergency code for a fire at Velmora?", "Code Tangerine", "team/staff.md", None),
]


def write_facts_domain(root: Path) -> Path:
    """A small domain with the FACTS above in PDF, text and Markdown."""
    write_pdf(root / "handbook.pdf", [
        "Velmora Clinic Handbook (fictional).\n\nThe Velmora clinic opens at 06:45 on weekdays. "
        "On weekends the clinic opens at 09:00. Patients should arrive ten minutes early.",
        "Medicines at Velmora.\n\nThe maximum daily dose of Quorvane is 35 mg. Quorvane is taken with food. "
        "Never combine Quorvane with grapefruit juice.",
    ])
    (root / "storage.txt").write_text(
        "Vaccine storage at Velmora (fictional).\n\nThe Brindleweed vaccine must be stored at 3 degrees Celsius. "
        "Check the fridge thermometer every morning and write the reading in the cold-chain log.\n",
        encoding="utf-8")
    (root / "team").mkdir()
    (root / "team" / "staff.md").write_text(
        "# Velmora staff (fictional)\n\nThe chief pharmacist of the Velmora clinic is Odalys Penhallow.\n\n"
        "## Emergencies\n\nThe emergency code for a fire at Velmora is Code Tangerine. "
        "Staff leave by the nearest stairway.\n",
        encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def models_dir(smollm2_path) -> Path:
    """The models folder that holds the converted base model (shared by every bot in the session)."""
    return Path(smollm2_path).parent


@pytest.fixture(scope="session")
def facts_index_bot(tmp_path_factory, models_dir):
    """A bot on the facts domain with the real embedder, real Chroma on disk and the real SmolLM2, built once."""
    from docbot import ConfigurableDocBot

    work = tmp_path_factory.mktemp("facts")
    docs = write_facts_domain(work / "Documents" / "Velmora")
    bot = ConfigurableDocBot(provider="transformers", documents_dir=str(work / "Documents"),
                             index_dir=str(work / "index"), models_dir=str(models_dir))
    bot.load_domain("velmora", docs, progress=False)
    return bot


@pytest.fixture
def facts_bot(facts_index_bot):
    """The session's facts bot with a conversation of its own: no test sees another test's turns."""
    from docbot import Conversation

    facts_index_bot.conversation = Conversation(facts_index_bot.config.history_turns)
    return facts_index_bot


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Folder of a tiny random Llama chat model (tests/tiny_model.py): trains and generates in a blink."""
    from tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny_model")))


def write_corpus(root: Path, files: int, paragraphs: int = 4, seed: int = 0) -> Path:
    """`files` text files of invented prose, every paragraph different, for crash, lock and load tests."""
    import random

    rng = random.Random(seed)
    syllables = ["vel", "mor", "quin", "dra", "sol", "tek", "bri", "nal", "osh", "ru", "zen", "pa", "lum", "gor"]
    words = ["".join(rng.sample(syllables, 3)) for _ in range(400)]
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        text = "\n\n".join(f"Section {p} of note {f}. " + " ".join(rng.choices(words, k=140)) + "."
                           for p in range(paragraphs))
        (root / f"note_{f:03d}.txt").write_text(text + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def embedder():
    """The real embedding model, as docbot loads it."""
    from docbot.rag.embeddings import Embedder

    return Embedder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, embedder):
    """40 files, 320 chunks in two embedding batches, and the store an uninterrupted load makes of them."""
    import time

    from index_worker import store_state

    from docbot.rag.index import DomainIndex
    from docbot.rag.store import open_store

    work = tmp_path_factory.mktemp("crash")
    docs = write_corpus(work / "docs", files=40)
    start = time.perf_counter()
    DomainIndex(open_store(work / "reference"), "corpus", embedder).sync(docs, 1000, 100, progress=False)
    return docs, store_state(work / "reference", "corpus"), time.perf_counter() - start
