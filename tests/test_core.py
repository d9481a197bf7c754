"""The core loop on real models and a real store: index a domain, answer with citations, stay in sync."""

from __future__ import annotations

import logging

import pytest

from conftest import FACTS, ScriptedModel, write_facts_domain, write_pdf
from docbot import ConfigurableDocBot, ConfigError, Conversation, DocbotError, IndexMismatchError, Retraction
from docbot.rag.retrieval import rrf_fuse
from docbot.rag.store import open_store


@pytest.mark.slow
def test_answers_contain_the_fact_and_cite_its_file_and_page(facts_bot):
    correct = 0
    for question, fact, file, page in FACTS:
        answer = facts_bot.ask(question, conversation=Conversation(0))  # each question on its own
        correct += fact.lower() in str(answer).lower()
        assert (file, page) in [(s.file, s.page) for s in answer.sources], (question, answer.sources)
        assert all(s.excerpt and s.chunk_id.startswith("velmora/") for s in answer.sources)
    assert correct >= len(FACTS) - 1


def test_off_topic_question_is_not_answered_from_thin_air(facts_bot):
    answer = facts_bot.ask("How do I bake sourdough bread at home?")
    assert "not in the documents" in str(answer)
    assert answer.sources == [] and not answer.covered


def test_streaming_yields_pieces_as_they_come_and_carries_sources(facts_bot):
    answer = facts_bot.ask(FACTS[1][0], stream=True)
    assert answer.sources and answer.sources[0].file == "handbook.pdf"  # known before the first piece
    pieces = list(answer)
    assert "".join(pieces) == answer.text and "35" in answer.text
    # every piece as the model writes it, the first sentence too (checked once complete, and kept)
    text = "The maximum daily dose of Quorvane is 35 mg. Take it with food, never with grapefruit juice."
    scripted = list(facts_bot.ask(FACTS[1][0], stream=True, model=ScriptedModel(text), conversation=Conversation(0)))
    assert scripted[:3] == ["The ", "maxi", "mum "] and not any(isinstance(p, Retraction) for p in scripted)
    assert "".join(scripted) == text


@pytest.mark.slow
def test_conversations_are_kept_apart(facts_bot):
    mine, other = Conversation(2), Conversation(2)
    answer = facts_bot.ask(FACTS[1][0], conversation=mine)
    assert [t.question for t in mine.turns] == [FACTS[1][0]] and mine.turns[0].answer == answer.text
    assert len(other) == 0 and len(facts_bot.conversation) == 0  # the bot's own conversation saw nothing
    assert mine.readings("and with food?") == [f"{FACTS[1][0]} and with food?"]  # a follow-up leans on it
    assert other.readings("and with food?") == ["and with food?"]
    facts_bot.reset()
    assert len(mine) == 1  # reset clears the bot's conversation, not one passed in


def test_keyword_search_finds_exact_names_among_fused_results(facts_bot):
    sources = facts_bot.retrieve("Brindleweed", k=1)
    assert sources[0].file == "storage.txt"


def test_the_keyword_index_is_saved_once_and_loaded_by_the_next_process_but_never_mid_write(tmp_path, embedder):
    """Counted, not timed: a reader saves what it built only when no write was under way; the next one loads it;
    a write moves the stamp, so the one after builds again; a damaged save is rebuilt, not an error."""
    from docbot.rag.index import DomainIndex
    from docbot.rag.keywords import KeywordIndex
    from docbot.rag.store import open_store

    docs = write_facts_domain(tmp_path / "docs")
    store = open_store(tmp_path / "index")
    index = DomainIndex(store, "velmora", embedder)
    index.sync(docs, 1000, 100, progress=False)
    cache = store.keyword_cache
    assert cache == tmp_path / "index" / "keywords"

    index._advance_generation(writing=True)  # as a writer does while it works: the stamp is odd
    during = KeywordIndex(index, cache)
    assert during.search("Brindleweed", 3) and during.built and not cache.exists()
    index._advance_generation(writing=False)

    first, second = KeywordIndex(index, cache), KeywordIndex(index, cache)
    assert first.search("Brindleweed", 3) == second.search("Brindleweed", 3) != []
    assert (first.built, second.built) == (True, False)
    assert "brindleweed" in second.vocabulary()

    (docs / "storage.txt").write_text("The Marrowfen vaccine must be stored at 5 degrees Celsius.\n")
    index.sync(docs, 1000, 100, progress=False)
    after = KeywordIndex(index, cache)
    assert after.search("Brindleweed", 3) == [] and after.search("Marrowfen", 3) and after.built
    assert [p.name for p in (cache / index.stamp()[0]).iterdir()] == [f"g{index.stamp()[1]}"]  # the old one went

    (cache / index.stamp()[0] / f"g{index.stamp()[1]}" / "docbot_ids.json").write_text("{damaged")
    rebuilt = KeywordIndex(index, cache)
    assert rebuilt.search("Marrowfen", 3) and rebuilt.built
    assert not KeywordIndex(index, cache).built  # and saved again in the damaged one's place


def test_a_domain_of_stopwords_alone_has_a_keyword_index_that_finds_nothing(tmp_path, embedder):
    """bm25s refuses a corpus with no word left after stopwords; a file saying only "the" is still a domain."""
    from docbot.rag.index import DomainIndex
    from docbot.rag.keywords import KeywordIndex
    from docbot.rag.store import open_store

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("the", encoding="utf-8")
    store = open_store(tmp_path / "index")
    index = DomainIndex(store, "stopwords", embedder)
    index.sync(tmp_path / "docs", 1000, 100, progress=False)
    keywords = KeywordIndex(index, store.keyword_cache)
    assert keywords.search("the", 3) == [] and keywords.vocabulary() == {"the"}
    assert KeywordIndex(index, store.keyword_cache).search("the", 3) == []  # and from its save


def test_a_load_that_changed_the_index_saves_its_keyword_index_for_the_first_question(tmp_path, models_dir):
    """At 110,873 chunks building it took 30 s: the load that changed the index pays it, not a later question."""
    write_facts_domain(tmp_path / "Documents" / "Velmora")
    bots = [ConfigurableDocBot(provider="transformers", documents_dir=str(tmp_path / "Documents"),
                               index_dir=str(tmp_path / "index"), models_dir=str(models_dir)) for _ in range(2)]
    assert bots[0].load_domain("velmora", progress=False).added
    assert bots[0]._retriever.keywords.built and (tmp_path / "index" / "keywords").is_dir()
    assert not bots[1].load_domain("velmora", progress=False).added  # a new process, nothing changed
    assert bots[1].retrieve("Brindleweed", k=1)[0].file == "storage.txt"
    assert not bots[1]._retriever.keywords.built  # loaded from the first load's save


def test_a_whole_domain_is_read_in_pages(tmp_path, embedder, monkeypatch):
    """One read of 110,873 chunks broke SQLite's limit on query variables (benchmarks/scale.py); pages of 2 chunks
    must give every chunk once, and a re-load must find every file as indexed."""
    from docbot.rag import index as index_module
    from docbot.rag.index import DomainIndex
    from docbot.rag.store import open_store

    docs = write_facts_domain(tmp_path / "docs")
    index = DomainIndex(open_store(tmp_path / "index"), "velmora", embedder)
    index.sync(docs, 200, 20, progress=False)
    whole = index.all_chunks()
    monkeypatch.setattr(index_module, "_PAGE", 2)
    assert index.all_chunks() == whole and len(whole) == index.count() > 4
    again = index.sync(docs, 200, 20, progress=False)
    assert (again.unchanged, again.added, again.changed, again.chunks) == (again.files, [], [], len(whole))


def test_rrf_fusion_orders_by_summed_reciprocal_ranks():
    # b: 1/62 + 1/61 beats a: 1/61 + 1/63, and c, found by one ranking only, comes after both
    assert rrf_fuse([["a", "b", "c"], ["b", "d", "a"]]) == ["b", "a", "d", "c"]


def test_reload_embeds_only_what_changed(tmp_path, models_dir):
    docs = write_facts_domain(tmp_path / "Documents" / "Velmora")
    bot = ConfigurableDocBot(provider="transformers", documents_dir=str(tmp_path / "Documents"),
                             index_dir=str(tmp_path / "index"), models_dir=str(models_dir))
    first = bot.load_domain("velmora", progress=False)
    assert (first.files, first.pages, len(first.added), first.skipped) == (3, 4, 3, [])
    pdf_ids = {s.chunk_id for s in bot.retrieve("Quorvane dose", k=10) if s.file == "handbook.pdf"}

    (docs / "storage.txt").write_text("The Brindleweed vaccine must be stored at 5 degrees Celsius.\n")
    (docs / "team" / "staff.md").unlink()
    (docs / "new.md").write_text("# Parking\n\nStaff park on level minus two of the Velmora garage.\n")
    second = bot.load_domain("velmora", progress=False)
    assert (second.added, second.changed, second.removed, second.unchanged) == (
        ["new.md"], ["storage.txt"], ["team/staff.md"], 1)
    sources = bot.retrieve("Where do staff park? Brindleweed storage temperature", k=10)
    assert "team/staff.md" not in {s.file for s in sources}
    assert any("5 degrees" in s.text for s in sources) and not any("3 degrees" in s.text for s in sources)
    assert pdf_ids <= {s.chunk_id for s in bot.retrieve("Quorvane dose", k=10)}  # untouched file, same ids

    third = bot.load_domain("velmora", progress=False)
    assert (third.added, third.changed, third.removed, third.unchanged) == ([], [], [], 3)


def test_unreadable_files_are_skipped_with_one_line_each(tmp_path, models_dir, caplog):
    docs = write_facts_domain(tmp_path / "Documents" / "Velmora")
    (docs / "empty.txt").write_text("")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ntrailer garbage")
    (docs / "page.pdf").write_bytes(b"<!DOCTYPE html><html><body>Not found</body></html>")
    (docs / "binary.txt").write_bytes(b"\x00\x01\x02 not text \x00")
    bot = ConfigurableDocBot(provider="transformers", documents_dir=str(tmp_path / "Documents"),
                             index_dir=str(tmp_path / "index"), models_dir=str(models_dir))
    with caplog.at_level(logging.WARNING, logger="docbot"):
        report = bot.load_domain("velmora", progress=False)
    reasons = dict(report.skipped)
    assert set(reasons) == {"empty.txt", "broken.pdf", "page.pdf", "binary.txt"}
    assert reasons["empty.txt"] == "empty file"
    assert "corrupt PDF" in reasons["broken.pdf"] and "not a PDF" in reasons["page.pdf"]
    assert "binary" in reasons["binary.txt"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and all("\n" not in line for line in lines)
    assert any(str(docs / "broken.pdf") in line for line in lines)
    assert report.files == 7 and len(report.added) == 3
    assert bot.retrieve(FACTS[3][0], k=1)[0].file == "team/staff.md"


def test_opening_an_index_with_another_embedding_model_is_refused(tmp_path, facts_bot):
    other = tmp_path / "minilm-copy"  # the same weights saved under another name: a different model id
    facts_bot.embedder._model.save(str(other))
    bot = ConfigurableDocBot(provider="transformers", embedding_model=str(other),
                             documents_dir=facts_bot.config.documents_dir, index_dir=facts_bot.config.index_dir)
    with pytest.raises(IndexMismatchError) as err:
        bot.load_domain("velmora", progress=False)
    message = str(err.value)
    assert "sentence-transformers/all-MiniLM-L6-v2" in message and "minilm-copy" in message
    assert "reindex" in message


def test_opening_an_index_filled_by_another_embedding_backend_is_refused(tmp_path, models_dir):
    docs = tmp_path / "Documents" / "Velmora"
    docs.mkdir(parents=True)
    write_facts_domain(docs)
    dirs = dict(documents_dir=str(tmp_path / "Documents"), index_dir=str(tmp_path / "index"),
                models_dir=str(models_dir))
    bot = ConfigurableDocBot(provider="transformers", **dirs)
    bot.load_domain("velmora", progress=False)
    collection = open_store(tmp_path / "index").client.get_collection("docbot-velmora")
    assert collection.metadata["embedding_backend"] == "sentence-transformers"
    collection.modify(metadata={**collection.metadata, "embedding_backend": "onnxruntime-int8"})
    with pytest.raises(IndexMismatchError) as err:
        ConfigurableDocBot(provider="transformers", **dirs).load_domain("velmora", progress=False)
    assert "onnxruntime-int8" in str(err.value) and "reindex velmora" in str(err.value)


def test_pdf_pages_are_cited_by_number(tmp_path, models_dir):
    docs = tmp_path / "Documents" / "Atlas"
    write_pdf(docs / "atlas.pdf", ["Nothing of note here.", "Still nothing.", "The Orvik lighthouse is 71 metres tall."])
    bot = ConfigurableDocBot(provider="transformers", documents_dir=str(tmp_path / "Documents"),
                             index_dir=str(tmp_path / "index"), models_dir=str(models_dir))
    bot.load_domain("atlas", progress=False)
    top = bot.retrieve("How tall is the Orvik lighthouse?", k=1)[0]
    assert (top.file, top.page, str(top)) == ("atlas.pdf", 3, "atlas.pdf p.3")


def test_bad_questions_and_missing_folders_are_clear_errors(tmp_path, facts_bot):
    with pytest.raises(DocbotError, match="empty"):
        facts_bot.ask("   ")
    with pytest.raises(DocbotError, match="at most"):
        facts_bot.ask("why " * 5000)
    bot = ConfigurableDocBot(documents_dir=str(tmp_path), index_dir=str(tmp_path / "index"))
    with pytest.raises(DocbotError, match="no such folder"):
        bot.load_domain("ghost", tmp_path / "ghost", progress=False)
    with pytest.raises(DocbotError, match="no domain loaded"):
        bot.ask("anything?")


def test_config_refuses_wrong_types_and_unknown_names():
    with pytest.raises(ConfigError, match="top_k must be a int"):
        ConfigurableDocBot(top_k="5")
    with pytest.raises(ConfigError, match="unknown config name.*topk"):
        ConfigurableDocBot(topk=5)
    with pytest.raises(ConfigError, match="chunk_overlap"):
        ConfigurableDocBot(chunk_size=100, chunk_overlap=100)
    assert ConfigurableDocBot(top_k=5).config.top_k == 5
