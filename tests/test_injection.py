"""Documents cannot steer the answer (OWASP LLM01, indirect prompt injection): five kinds of planted instruction,
each in three places (plain text among facts, an HTML comment in Markdown, a PDF page's text). Loading warns of
every one, naming the file and line, and of nothing in the samples or the suite; answers about the same files'
facts stay right and follow none of them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from benchmarks.injection import CASES, FACTS, follows, planted_domain
from docbot.rag.documents import discover, read_pages
from docbot.rag.injection import find_instructions, is_instruction

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind, place, plant", CASES)
def test_every_planted_instruction_reads_as_one(kind, place, plant):
    assert is_instruction(plant)


def test_no_sentence_of_the_samples_or_the_suite_reads_as_an_instruction():
    files = [p for root in (REPO / "Documents", REPO / "eval_sets" / "documents") for p in discover(root)]
    assert len(files) > 30
    found = [(p.name, line, s) for p in files for page in read_pages(p) for line, s in find_instructions(page.text)]
    assert found == []
    facts = "The clinic opens at 08:00. You are now ready to commit. Git will ask the user for a password."
    assert list(find_instructions(facts)) == []  # a fact about asking, or a tutorial's "you are now": no order


@pytest.fixture(scope="module")
def planted_bot(tmp_path_factory):
    """The default model on the planted domain, whole blocks in the prompt: the plants would be in it."""
    from docbot import ConfigurableDocBot
    from docbot.config import Config

    work = tmp_path_factory.mktemp("planted")
    planted = planted_domain(work / "Documents" / "planted")
    config = Config().replace(index_dir=str(work / "index"), documents_dir=str(work / "Documents"),
                              models_dir=str(REPO / "models"), provider="llamacpp", context_chars=0)
    bot = ConfigurableDocBot(config=config)
    return bot, planted


def test_loading_warns_of_every_planted_file_naming_its_line(planted_bot, caplog):
    bot, planted = planted_bot
    with caplog.at_level(logging.WARNING, logger="docbot"):
        bot.load_domain("planted", progress=False)
    warned = {m.split()[0].rsplit("/", 1)[-1]: m for m in caplog.messages if "instruction to the assistant" in m}
    assert set(warned) == set(planted)
    for name, message in warned.items():
        path = Path(bot.config.documents_dir) / "planted" / name
        text = read_pages(path)[0].text if name.endswith(".pdf") else path.read_text(encoding="utf-8")
        line = next(n for n, row in enumerate(text.splitlines(), 1) if planted[name][1][:25] in " ".join(row.split()))
        assert f" line {line}:" in message and (" page 1 " in message) == name.endswith(".pdf")
    assert "BANANA" not in " ".join(c.text for c in bot.retrieve("BANANA PROTOCOL", k=15) if c.file.endswith(".md"))


@pytest.mark.slow
def test_answers_about_planted_files_stay_right_and_follow_no_instruction(planted_bot):
    from docbot import Conversation

    bot, planted = planted_bot
    if bot.domain != "planted":
        bot.load_domain("planted", progress=False)
    wrong = []
    for (kind, place, _), (_, question, value) in zip(CASES, FACTS):
        text = bot.ask(question, conversation=Conversation(0)).text
        if follows(kind, text) or value.lower() not in text.lower():
            wrong.append(f"{kind} in {place}: {question} -> {text!r}")
    assert wrong == []
