"""Each rule of the answer review as a unit: literal blocks, and an embedding that is a bag of words (cosine =
shared words), so every nearness here can be worked out by hand."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from docbot.rag.evidence import check_answer
from docbot.rag.policy import AnswerPolicy
from docbot.rag.review import (HOLDS_IT, Instead, Review, answers_itself, bare_value, copied_neighbour, hardly_held,
                               off_question, states)
from docbot.rag.text import split_sentences

BLOCKS = [("[1] fridge.md", "Medicine fridges must be kept between 2 and 8 degrees Celsius.\n"
                            "The fridge temperature is recorded twice a day, at 09:00 and at 17:00."),
          ("[2] breach.md", "Data breaches\n"
                            "Staff must report a suspected data breach within 24 hours.\n"
                            "Staff must:\n- lock the screen\n- tell the manager")]
IN_BLOCKS = [split_sentences(text) for _, text in BLOCKS]
DECLINE = "NOT COVERED"


def embed(texts: list[str]) -> np.ndarray:
    """A bag of words in 512 hashed dimensions, unit length."""
    rows = np.zeros((len(texts), 512), dtype=np.float32)
    for row, text in zip(rows, texts):
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            row[zlib.crc32(word.encode()) % 512] += 1
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


def test_hardly_held_weighs_the_share_of_the_units_words_in_the_blocks():
    held = check_answer("Medicine fridges must be kept between 2 and 8 degrees Celsius.", BLOCKS)
    worldly = check_answer("A normal adult blood pressure is about 120 over 80 mmHg.", BLOCKS)
    assert not hardly_held(held, 0.35) and hardly_held(worldly, 0.35)
    assert not hardly_held(worldly, None)  # switched off


def test_off_question_reads_the_units_evidence_against_the_question():
    question = "What temperature must medicine fridges be kept at?"
    on = check_answer("Medicine fridges must be kept between 2 and 8 degrees Celsius.", BLOCKS)
    off = check_answer("Staff must report a suspected data breach within 24 hours.", BLOCKS)
    assert not off_question((question,), on, IN_BLOCKS, 0.5, embed)
    assert off_question((question,), off, IN_BLOCKS, 0.5, embed)
    assert not off_question((question,), off, IN_BLOCKS, None, embed)


def test_answers_itself_is_the_nearest_sentence_that_states_something():
    assert answers_itself("How long do staff have to report a suspected data breach?", IN_BLOCKS, 0.5, embed) == \
        "Staff must report a suspected data breach within 24 hours."
    assert answers_itself("data breaches", IN_BLOCKS, 2.0, embed) is None  # not near enough
    assert answers_itself("data breaches", IN_BLOCKS, None, embed) is None
    assert not states("Data breaches") and not states("Staff must:") and states("Room 4")


def test_copied_neighbour_gives_way_to_the_sentence_that_answers():
    question = "What temperature range must medicine fridges be kept between?"
    unit = "The fridge temperature is recorded twice a day, at 09:00 and at 17:00."
    evidence = check_answer(unit, BLOCKS)
    together = copied_neighbour(question, unit, evidence, IN_BLOCKS, 0.1, embed)
    assert together == f"Medicine fridges must be kept between 2 and 8 degrees Celsius. {unit}"  # neighbours, in order
    assert copied_neighbour(question, unit, evidence, IN_BLOCKS, None, embed) is None
    right = "Medicine fridges must be kept between 2 and 8 degrees Celsius."
    assert copied_neighbour(question, right, check_answer(right, BLOCKS), IN_BLOCKS, 0.1, embed) is None


def test_bare_value_becomes_the_sentence_that_holds_it():
    question = "How quickly must a suspected data breach be reported?"
    assert bare_value(question, "24 hours", IN_BLOCKS, 6, embed) == \
        "Staff must report a suspected data breach within 24 hours."
    assert bare_value(question, "48 hours", IN_BLOCKS, 6, embed) is None  # no sentence holds it
    assert bare_value(question, "24 hours", IN_BLOCKS, None, embed) is None
    assert bare_value(question, "Staff report it within 24 hours to the manager", IN_BLOCKS, 6, embed) is None


@pytest.mark.parametrize("unit, instead", [
    ("That is not in the documents.", Instead(DECLINE)),  # the model's own decline
    ("A normal adult blood pressure is about 120 over 80 mmHg.", Instead(DECLINE)),  # hardly held
    ("24 hours", Instead("Staff must report a suspected data breach within 24 hours.", False, HOLDS_IT)),
    ("Staff must report a suspected data breach within 24 hours.", None),
    ("Staff must:\n- lock the screen\n- tell the manager", None),  # a list is kept whole
])
def test_the_review_applies_the_rules_in_the_policys_order(unit, instead):
    review = Review(("What must staff do about a suspected data breach?",) * 2, BLOCKS, AnswerPolicy(), embed,
                    DECLINE)
    assert review(unit) == instead


def test_a_list_is_declined_or_kept_never_cut_to_one_sentence():
    question = ("What temperature range must medicine fridges be kept between?",) * 2
    listed = "Medicine fridges:\n- kept between 2 and 8 degrees Celsius\n- recorded twice a day"
    assert Review(question, BLOCKS, AnswerPolicy(), embed, DECLINE)(listed) is None
    worldly = "Blood pressure:\n- about 120 over 80 mmHg\n- lower at night"
    assert Review(question, BLOCKS, AnswerPolicy(answers_itself=None), embed, DECLINE)(worldly) == Instead(DECLINE)
