"""The answer check: evidence comes from the blocks, right answers pass, planted wrong facts are flagged."""

from __future__ import annotations

import pytest

from docbot.rag.evidence import Evidence, check_answer, highlight, says_not_in_sources
from docbot.rag.text import split_sentences
from docbot.rag.prompts import NOT_COVERED

# Two blocks as retrieval hands them over: PDF text wraps mid-sentence, Markdown has headings and list items.
FORMULARY = ("formulary.pdf p.1",
             "Zorvexin\nZorvexin is an oral anti-inflammatory tablet. The tablets are made in two strengths: 10 mg "
             "and 25 mg.\nThe usual adult dose of Zorvexin is 10 mg twice a day. The maximum daily dose of Zorvexin "
             "for\nadults is 40 mg. Zorvexin must be taken with food. Calyprane is used to shorten the course of "
             "Tallis\nfever, a viral illness. A medicine that is not listed is requested on form PF-12.")
HANDBOOK = ("staff_handbook.md",
            "# Staff handbook (fictional)\n\n## New starters\n\n- New starters wear a green lanyard for 3 months.\n"
            "- The Infection Control Lead is Dr. Samuel Achterberg.\n- The Medical Director is Dr. Imelda Okafor.\n\n"
            "## Breaks\n\nStaff take a 30 minute break on the early shift.\n\n## Appointments\n\n"
            "A standard appointment lasts 12 minutes. A double appointment lasts 24 minutes.\n"
            "Visiting hours are from 14:00 to 20:00 every day.\n")
BLOCKS = [FORMULARY, HANDBOOK]


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_evidence_sentences_come_from_the_given_blocks():
    answers = ["40 mg", "Green", "Dr. Samuel Achterberg", "Staff take a 30 minute break.",
               "The maximum daily dose of Zorvexin for adults is 40 mg. New starters wear a green lanyard."]
    texts = [_flat(text) for _, text in BLOCKS]
    for answer in answers:
        evidence = check_answer(answer, BLOCKS)
        assert evidence.sentences, answer
        for sentence in evidence.sentences:
            assert any(sentence in text for text in texts), (answer, sentence)


def test_a_correct_short_answer_is_supported_with_the_right_sentence_first():
    dose = check_answer("40 mg", BLOCKS)
    assert dose.supported and dose.score == 1.0
    assert dose.sentences[0] == "The maximum daily dose of Zorvexin for adults is 40 mg."
    assert check_answer("40mg", BLOCKS).sentences[0] == dose.sentences[0]
    colour = check_answer("Green", BLOCKS)
    assert colour.supported
    assert colour.sentences[0] == "New starters wear a green lanyard for 3 months."


def test_a_full_sentence_answer_is_supported_despite_case_plurals_and_a_wrapped_line():
    evidence = check_answer("Calyprane shortens the course of tallis fever.", BLOCKS)
    assert evidence.supported
    assert evidence.sentences[0] == "Calyprane is used to shorten the course of Tallis fever, a viral illness."
    assert check_answer("The maximum daily doses of zorvexin for an adult are 40 mg (formulary.pdf p.1).",
                        BLOCKS).supported


def test_a_planted_wrong_number_code_unit_or_name_is_flagged():
    for wrong in ["45 mg", "The maximum daily dose of Zorvexin for adults is 25 mg.",
                  "The maximum daily dose of Zorvexin for adults is 40 mL.",
                  "A medicine that is not listed is requested on form PF-21.",
                  "The Infection Control Lead is Dr. Marco Estevanez.",
                  "New starters wear a green lanyard for 6 months."]:
        evidence = check_answer(wrong, BLOCKS)
        assert not evidence.supported, (wrong, evidence)


@pytest.mark.parametrize("sentence, declines", [
    ("That is not in the documents.", True),  # the reply the prompt asks for
    ("The clinic's email address is not in the documents.", True),
    ("The text does not mention a lunch break.", True),
    ("Staff do not give test results by phone.", False),  # a fact with "not" in it
    ("Patients not registered at the clinic cannot book online.", False),
])
def test_a_decline_in_the_models_own_words_is_recognised(sentence, declines):
    assert says_not_in_sources(sentence) is declines


def test_an_email_or_web_address_is_checked_whole_like_a_code():
    blocks = BLOCKS + [("contacts.md", "Results are sent to lab@harborview.example. Opening hours are on "
                                       "https://harborview.example/hours.")]
    assert check_answer("Results are sent to lab@harborview.example.", blocks).supported
    assert check_answer("Opening hours are on https://harborview.example/hours.", blocks).supported
    for made_up in ["Results are sent to results@harborview.example.",  # every word of it is in the blocks
                    "Opening hours are on https://harborview.example/opening."]:
        assert not check_answer(made_up, blocks).supported, made_up


def test_a_value_swapped_with_its_neighbour_in_the_same_block_is_flagged():
    """The usual slip of a small model: the right sentence with the number or name of the next one."""
    assert check_answer("A standard appointment lasts 12 minutes.", BLOCKS).supported
    for wrong in ["A standard appointment lasts 24 minutes.",
                  "The maximum daily dose of Zorvexin for adults is 10 mg.",
                  "The Medical Director is Dr. Samuel Achterberg.",
                  "New starters wear a Medical Director for 3 months."]:
        evidence = check_answer(wrong, BLOCKS)
        assert not evidence.supported, (wrong, evidence)


def test_times_on_the_twelve_hour_clock_match_the_documents_24_hour_times():
    assert check_answer("Visiting hours are 2pm to 8 p.m.", BLOCKS).supported
    assert not check_answer("Visiting hours are 2pm to 9pm.", BLOCKS).supported


def test_a_fluent_off_topic_answer_is_flagged():
    evidence = check_answer("Visitors must clean their hands with gel when they enter and leave the unit.", BLOCKS)
    assert not evidence.supported
    assert evidence.score < 0.5


def test_a_decline_or_an_empty_answer_is_not_checked():
    for answer in [NOT_COVERED.format(domain="medical"), "", "   ",
                   "The provided text does not mention the opening hours of the pharmacy."]:
        assert check_answer(answer, BLOCKS) == Evidence((), True, 1.0, ())


def test_a_fact_stated_with_do_not_is_checked_not_taken_for_a_decline():
    assert check_answer("Zorvexin must be taken with food.", BLOCKS).supported
    assert not check_answer("Surgeons do not give Zorvexin to patients over 80.", BLOCKS).supported


def test_a_two_sentence_answer_citing_two_blocks_gets_a_sentence_from_each():
    evidence = check_answer("The maximum daily dose of Zorvexin for adults is 40 mg. "
                            "The Infection Control Lead is Dr. Samuel Achterberg.", BLOCKS)
    assert evidence.supported
    assert evidence.sentences == ("The maximum daily dose of Zorvexin for adults is 40 mg.",
                                  "The Infection Control Lead is Dr. Samuel Achterberg.")


def test_at_most_two_sentences_are_returned():
    evidence = check_answer("Zorvexin must be taken with food. New starters wear a green lanyard. "
                            "The Medical Director is Dr. Imelda Okafor.", BLOCKS)
    assert evidence.supported
    assert len(evidence.sentences) == 2


def test_highlight_marks_the_keywords_in_bold():
    evidence = check_answer("The maximum daily dose is 40 mg.", BLOCKS)
    assert "40 mg" in evidence.keywords and "dose" in evidence.keywords
    marked = highlight(evidence.sentences[0], evidence.keywords)
    assert "\033[1m40 mg\033[0m" in marked and "\033[1mdose\033[0m" in marked
    assert "\033[1mZorvexin" not in marked  # not a word of the answer
    assert highlight("nothing to mark", ()) == "nothing to mark"


def test_split_sentences_keeps_list_items_apart_and_joins_wrapped_lines():
    sentences = split_sentences(HANDBOOK[1] + "\n" + FORMULARY[1])
    assert "New starters wear a green lanyard for 3 months." in sentences
    assert "The Infection Control Lead is Dr. Samuel Achterberg." in sentences  # no split after "Dr."
    assert "The maximum daily dose of Zorvexin for adults is 40 mg." in sentences
    assert "Zorvexin" in sentences  # a heading line stays on its own
