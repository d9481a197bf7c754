"""Context selection: the blocks cut to their sentences nearest the question (real MiniLM embeddings), the same for
answers and training rows."""

from __future__ import annotations

import pytest

from docbot.rag.context import select_context
from docbot.rag.index import StoredChunk
from docbot.rag.prompts import build_messages
from docbot.tuning.datasets import Record, to_row

RECORDS = ("# Patient records\n\nAdult records are kept for 8 years after the last contact. Children's records are "
           "kept until the patient's 25th birthday. Records of a patient who has died are kept for 10 years.\n\n"
           "The Records Officer reviews the ClearChart access log every week. Passwords must be changed every 90 "
           "days.")
FIRE = ("# Fire safety\n\nIf the fire alarm sounds, leave by the nearest exit. The assembly point is the Oak Lawn "
        "beside the north car park. The evacuation chair is kept on the first floor stairwell landing.")


@pytest.fixture(scope="module")
def embed(embedder):
    return embedder.embed


def test_the_context_keeps_the_sentences_nearest_the_question_in_their_blocks_and_order(embed):
    blocks = [("records.md", RECORDS), ("fire.md", FIRE)]
    kept = select_context("How long are children's records kept?", blocks, 100, embed)
    assert kept[0][0] == "records.md" and "25th birthday" in kept[0][1] and "8 years" not in kept[0][1]
    assert sum(len(text) for _, text in kept) <= 100
    both = select_context("Who reviews the access log, and where is the fire assembly point?", blocks, 200, embed)
    assert [label for label, _ in both] == ["records.md", "fire.md"]
    assert "access log" in both[0][1] and "Oak Lawn" in both[1][1] and "25th" not in both[0][1]
    assert sum(len(text) for _, text in both) <= 200


def test_whole_blocks_when_they_fit_or_no_budget_and_never_an_empty_context(embed):
    blocks = [("records.md", RECORDS)]
    assert select_context("anything", blocks, 0, embed) == blocks == select_context("anything", blocks, 10_000, embed)
    assert select_context("unrelated words entirely", blocks, 10, embed)[0][1]  # at least the best sentence


def test_training_rows_carry_the_prompt_an_answer_would_get(embed):
    chunk = StoredChunk("d/records.md#p-.c0", RECORDS, "records.md", None, 0, "f" * 64)
    record = Record("How long are children's records kept?", "until the patient's 25th birthday", "records.md", None,
                    chunk.id, "rules", (chunk,))
    row = to_row(record, "chat", context_chars=120, embed=embed)
    expected = build_messages(record.question, select_context(record.question, [chunk.block], 120, embed))
    assert row["messages"][:-1] == expected and "access log" not in row["messages"][0]["content"]


def test_sentence_vectors_are_remembered_between_answers_within_a_bound(embedder, monkeypatch):
    embedded, real = [], embedder.embed
    monkeypatch.setattr(embedder, "embed", lambda texts: embedded.extend(texts) or real(texts))
    monkeypatch.setattr(embedder, "REMEMBERED", 3)
    first = embedder.embed_remembered(["Adult records are kept for 8 years.", "The alarm sounds."])
    again = embedder.embed_remembered(["The alarm sounds.", "Adult records are kept for 8 years.", "A new one."])
    assert embedded == ["Adult records are kept for 8 years.", "The alarm sounds.", "A new one."]
    assert (again[:2] == first[::-1]).all()
    afresh = real(["The alarm sounds.", "Adult records are kept for 8 years.", "A new one."])
    assert min((again * afresh).sum(axis=1)) > 0.99  # the same vectors (up to batch padding in bfloat16)
    embedder.embed_remembered(["Fourth."])  # the least recently used is forgotten: "The alarm sounds."
    embedder.embed_remembered(["The alarm sounds.", "A new one."])
    assert embedded[-2:] == ["Fourth.", "The alarm sounds."]


def test_a_list_is_kept_whole_with_its_lead_in(embed):
    breach = ("# Data breaches\n\nA suspected breach is reported within 24 hours. After a suspected breach, staff "
              "must:\n- lock the affected computer\n- write down the time\n- call the Data Protection Officer\n\n"
              "The Data Protection Officer keeps the breach register. Training on data protection is yearly.")
    kept = select_context("What must staff do after a suspected breach?", [("breach.md", breach)], 120, embed)
    assert all(item in kept[0][1] for item in ("- lock the affected computer", "- write down the time",
                                               "- call the Data Protection Officer"))
    assert "register" not in kept[0][1]  # the budget still holds for the rest
