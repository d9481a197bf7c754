"""Context trimming: a block cut to its sentences nearest the question, the same for answers and training rows."""

from __future__ import annotations

from docbot.rag.context import trim_block, trim_blocks
from docbot.rag.index import StoredChunk
from docbot.rag.prompts import build_messages
from docbot.tuning.datasets import Record, to_row

RECORDS = ("# Patient records\n\nAdult records are kept for 8 years after the last contact. Children's records are "
           "kept until the patient's 25th birthday. Records of a patient who has died are kept for 10 years.\n\n"
           "The Records Officer reviews the ClearChart access log every week. Passwords must be changed every 90 "
           "days.")


def test_a_block_keeps_the_sentences_that_bear_on_the_question_in_their_order():
    trimmed = trim_block("How long are children's records kept?", RECORDS, 120)
    assert "25th birthday" in trimmed and "access log" not in trimmed and len(trimmed) <= 130
    both = trim_block("Who reviews the access log, and how often must passwords be changed?", RECORDS, 160)
    assert both.index("access log") < both.index("90 days") and "25th" not in both
    assert trim_block("anything", RECORDS, 0) == RECORDS == trim_block("anything", RECORDS, 10_000)
    assert trim_block("unrelated words entirely", RECORDS, 50)  # at least one sentence, never empty


def test_training_rows_carry_the_prompt_an_answer_would_get():
    chunk = StoredChunk("d/records.md#p-.c0", RECORDS, "records.md", None, 0, "f" * 64)
    record = Record("How long are children's records kept?", "until the patient's 25th birthday", "records.md", None,
                    chunk.id, "rules", (chunk,))
    row = to_row(record, "chat", context_chars=120)
    expected = build_messages(record.question, trim_blocks(record.question, [chunk.block], 120))
    assert row["messages"][:-1] == expected and "access log" not in row["messages"][0]["content"]
