"""The guards on a model's stream: no repeated sentence and no looping phrase reaches the user, the model's own
"not in the documents" and an answer the blocks do not hold become the one decline sentence, and follow-ups are
told from new questions."""

from __future__ import annotations

import io
import json

import pytest

from conftest import FACTS, REPO, ScriptedModel
from docbot import Conversation
from docbot.rag.conversation import leans_on_previous
from docbot.rag.guards import GuardReport, count_loops, guarded
from docbot.rag.review import Instead, Retraction, checked_first_unit
from docbot.rag.prompts import NOT_COVERED


def run(text: str, piece: int = 3) -> tuple[str, GuardReport]:
    report = GuardReport()
    shown = "".join(guarded(iter([text[i:i + piece] for i in range(0, len(text), piece)]), report))
    assert text.startswith(shown)  # held back or cut, never changed
    return shown, report


@pytest.mark.parametrize("text, shown, fired", [
    ("The maximum daily dose of Zorvexin for children is 40 mg. " * 12,
     "The maximum daily dose of Zorvexin for children is 40 mg. ", "repeated sentence"),
    ("Keep it cold.\nCheck daily.\nKeep it cold.\nMore.", "Keep it cold.\nCheck daily.\n", "repeated sentence"),
    ("40 mg.The maximum daily dose is 40 mg.The maximum daily dose is 40 mg.", "40 mg.The maximum daily dose is 40 mg.",
     "repeated sentence"),
    ("The Records Officer reviews it every week. The Records Officer also keeps the keys.",
     "The Records Officer reviews it every week. The Records Officer also keeps the keys.", None),
    ("Yes. Yes, visitors may.", "Yes. Yes, visitors may.", None),
])
def test_a_repeated_sentence_is_held_back_and_stops_the_answer(text, shown, fired):
    got, report = run(text)
    assert got == shown and report.fired == fired


def test_a_looping_phrase_without_full_stops_is_cut_before_its_third_run():
    text = "Paris. " + "The text ends with: " * 40
    shown, report = run(text)
    assert report.fired == "looping phrase" and count_loops(text) > 0 and count_loops(shown) == 0
    assert shown.count("The text ends with:") <= 3 and len(shown) < 100


def test_a_scripted_looping_model_is_stopped_through_the_answer_path(facts_bot):
    looping = ScriptedModel("The maximum daily dose of Quorvane is 35 mg. " * 50)
    answer = facts_bot.ask(FACTS[1][0], model=looping, conversation=Conversation(0))
    assert answer.text == "The maximum daily dose of Quorvane is 35 mg." and answer.guard.fired
    assert looping.sent < 40  # generation was stopped, not read to its end
    assert count_loops(answer.guard.raw) == 0  # the model was closed before it could loop three times


def test_a_loop_completed_by_the_sentence_shown_in_the_first_ones_place_is_cut(facts_bot):
    # "35 mg." is shown as the block sentence that holds it; with it, the model's next two sentences make a third
    # run of "daily dose of Quorvane is 35" that the model's own stream holds only twice
    model = ScriptedModel("35 mg. The daily dose of Quorvane is 35 mg for adults. So the daily dose of Quorvane is "
                          "35 mg in all. It is taken with food.")
    answer = facts_bot.ask(FACTS[1][0], model=model, conversation=Conversation(0))
    assert answer.text.startswith("The maximum daily dose of Quorvane is 35 mg. The daily dose of Quorvane is 35 mg")
    assert count_loops(answer.guard.raw) == 0 and count_loops(answer.text) == 0
    assert answer.guard.fired == "looping phrase" and "taken with food" not in answer.text


def test_the_models_own_decline_becomes_the_decline_sentence(facts_bot):
    declining = ScriptedModel("That is not in the documents. It may be in another source.", piece=2)
    answer = facts_bot.ask("What is the fire code at Velmora on Sundays?", model=declining,
                           conversation=Conversation(0), stream=True)
    pieces = list(answer)
    assert "".join(pieces[:-1]).strip() == "That is not in the documents." and isinstance(pieces[-1], Retraction)
    assert answer.text == NOT_COVERED.format(domain="velmora")
    assert not answer.covered and answer.sources == []
    almost = facts_bot.ask(FACTS[4][0], model=ScriptedModel("That is Code Tangerine."), conversation=Conversation(0))
    assert "Code Tangerine." in almost.text and almost.covered  # a reply that only starts alike


@pytest.mark.parametrize("text, stands, withdrawn", [
    ("Paris is the capital. It is in France.", "DECLINED", "Paris is the capital."),  # shown, then withdrawn
    ("It opens at 06:45. Paris is the capital.", "It opens at 06:45. Paris is the capital.", None),  # only the first
    ("Paris is the capital", "DECLINED", "Paris is the capital"),  # the stream ended inside it: checked all the same
    ("\n\nIt opens at 06:45.", "\n\nIt opens at 06:45.", None),  # leading blank lines do not end a sentence
    ("Dr. Paris leads it. It opens at 06:45.", "DECLINED", "Dr. Paris leads it."),  # a title does not end it
    ("06:45. It opens at 06:45. Daily.", "It opens at 06:45. Daily.", "06:45."),  # in a bare value's place: no repeat
    ("06:45. Then it closes.", "It opens at 06:45. Then it closes.", "06:45."),  # and the rest follows
    ("You need:\n- a form\n- a photo\nThen wait.", "You need:\n- a form\n- a photo\nThen wait.", None),  # a list
    ("Paris needs:\n1. a form\n2. a photo\nThen wait.", "DECLINED", "Paris needs:\n1. a form\n2. a photo\n"),
])
def test_the_first_unit_is_shown_as_it_comes_and_withdrawn_when_a_rule_replaces_it(text, stands, withdrawn):
    checked: list[str] = []

    def review(unit: str) -> Instead | None:
        checked.append(unit)
        if unit.strip() == "06:45.":
            return Instead("It opens at 06:45.", final=False)
        return Instead("DECLINED") if "Paris" in unit else None

    pieces = list(checked_first_unit(iter([text[i:i + 3] for i in range(0, len(text), 3)]), review))
    retractions = [i for i, piece in enumerate(pieces) if isinstance(piece, Retraction)]
    final = "".join(pieces[retractions[-1]:] if retractions else pieces)
    assert final == stands
    assert ("".join(pieces[:retractions[0]]) if retractions else None) == withdrawn  # every word of it was shown
    assert len(checked) == 1 and text.strip().startswith(checked[0].strip())
    if "You need" in text or "Paris needs" in text:
        assert checked[0].rstrip().endswith("a photo")  # a list is read whole, lead-in and items


def test_the_chat_shows_a_withdrawn_sentence_marked_and_then_what_replaces_it(facts_bot, monkeypatch):
    from docbot.repl import Repl

    ask = facts_bot.ask
    worldly = ScriptedModel("A normal adult blood pressure is about 120 over 80 mmHg. Exercise helps.")
    monkeypatch.setattr(facts_bot, "ask", lambda question, **kw: ask(question, model=worldly,
                                                                     conversation=Conversation(0), **kw))
    out, err = io.StringIO(), io.StringIO()
    Repl(facts_bot, out, err).answer("What are the side effects of Quorvane?")
    shown = [line.rstrip() for line in out.getvalue().splitlines()]
    assert shown == ["A normal adult blood pressure is about 120 over 80 mmHg.",
                     "  [withdrawn: the documents do not back it]", NOT_COVERED.format(domain="velmora")]


def test_an_answer_the_blocks_do_not_hold_becomes_the_decline_sentence(facts_bot):
    worldly = ScriptedModel("A normal adult blood pressure is about 120 over 80 mmHg. Exercise helps.")
    answer = facts_bot.ask("What are the side effects of Quorvane?", model=worldly, conversation=Conversation(0),
                           stream=True)
    pieces = list(answer)
    assert "".join(pieces).startswith("A normal adult") and pieces[-1] == NOT_COVERED.format(domain="velmora")
    assert isinstance(pieces[-1], Retraction) and answer.text == pieces[-1]  # shown as written, then withdrawn
    assert not answer.covered and answer.sources == []
    assert 0 < worldly.sent < 20  # asked, and closed after its first sentence
    # unless a block sentence answers the question by itself: that one is shown instead
    worldly = ScriptedModel("A normal adult blood pressure is about 120 over 80 mmHg. Exercise helps.")
    answered = facts_bot.ask(FACTS[1][0], model=worldly, conversation=Conversation(0))
    assert answered.text == "The maximum daily dose of Quorvane is 35 mg." and answered.covered
    wrong = facts_bot.ask(FACTS[1][0], model=ScriptedModel("The maximum daily dose of Quorvane is 90 mg."),
                          conversation=Conversation(0))
    assert wrong.covered and not wrong.evidence.supported  # most of it is in the blocks: flagged, not declined


def test_a_question_naming_what_the_domain_never_mentions_is_declined_without_the_model(facts_bot):
    silent = ScriptedModel("should never be asked")
    answer = facts_bot.ask("What is the maximum daily dose of ibuprofen?", model=silent, conversation=Conversation(0))
    assert not answer.covered and answer.text == NOT_COVERED.format(domain="velmora") and silent.sent == 0
    assert facts_bot.retrieve("ibuprofen")  # the search itself finds blocks: the unknown word decides


def test_another_form_of_a_word_the_domain_uses_is_not_an_unknown_term(facts_bot):
    # "dosing" is neither in the documents nor a whole word of the embedding model's vocabulary; "dose" is both
    dosing = ScriptedModel("The maximum daily dose of Quorvane is 35 mg.")
    answer = facts_bot.ask("What is the maximum daily dosing of Quorvane?", model=dosing, conversation=Conversation(0))
    assert answer.covered and dosing.sent > 0 and "35 mg" in answer.text
    # nor are the words of a quantity ("year-old" is in neither)
    aged = ScriptedModel("The maximum daily dose of Quorvane is 35 mg.")
    answer = facts_bot.ask("What is the maximum daily dose of Quorvane for a 40-year-old?", model=aged,
                           conversation=Conversation(0))
    assert answer.covered and aged.sent > 0
    # nor is a user's word built of common ones ("house" + "bound"), which the embedding model spells in two pieces
    housebound = ScriptedModel("The maximum daily dose of Quorvane is 35 mg.")
    answer = facts_bot.ask("How much Quorvane may a housebound patient take in a day?", model=housebound,
                           conversation=Conversation(0))
    assert answer.covered and housebound.sent > 0


class Listening(ScriptedModel):
    """A scripted model that keeps the messages it was asked with."""

    def stream(self, messages, max_new_tokens):
        self.messages = messages
        return super().stream(messages, max_new_tokens)


def test_a_follow_up_is_asked_after_the_exchange_it_leans_on_and_a_new_question_alone(facts_bot):
    chat, dose = Conversation(2), "The maximum daily dose of Quorvane is 35 mg."
    first = Listening(dose)
    facts_bot.ask(FACTS[1][0], model=first, conversation=chat)
    follow_up = Listening(dose)
    facts_bot.ask("And with food?", model=follow_up, conversation=chat)
    assert [m["role"] for m in follow_up.messages] == ["system", "user", "assistant", "user"]
    assert follow_up.messages[1] == first.messages[1]  # the earlier prompt as sent, so llama.cpp's cache holds it
    assert follow_up.messages[2]["content"] == dose and "Question: " in follow_up.messages[3]["content"]
    brief = Listening("Odalys Penhallow is the chief pharmacist.")
    facts_bot.ask(FACTS[3][0], model=brief, conversation=chat)  # names its own subject: asked alone
    assert [m["role"] for m in brief.messages] == ["system", "user"]
    facts_bot.ask(FACTS[4][0], model=ScriptedModel("That is not in the documents."), conversation=chat)
    after_decline = Listening("Code Tangerine.")
    facts_bot.ask("And on Sundays?", model=after_decline, conversation=chat)  # a declined turn is not an exchange
    assert [m["role"] for m in after_decline.messages] == ["system", "user"]
    unasked = facts_bot.ask("What is the capital of France?", model=ScriptedModel("Paris."), conversation=chat)
    assert not unasked.covered and chat.turns[-1].question == "What is the capital of France?"  # declined unasked
    assert chat.readings("What about Quorvane?")[-1] == "What is the capital of France? What about Quorvane?"


def test_follow_ups_and_brief_new_questions_on_the_dev_pairs():
    rows = [json.loads(line) for line in (REPO / "eval_sets" / "medical_turns_dev.jsonl").read_text().splitlines()]
    assert all(leans_on_previous(r["then"]) == (r["kind"] == "follow-up") for r in rows)
    standalone = [json.loads(line)["question"] for line in
                  (REPO / "eval_sets" / "medical_dev.jsonl").read_text().splitlines()]
    assert not any(leans_on_previous(q) for q in standalone)
    chat = Conversation(2)
    chat.add("Who reviews the ClearChart access log?", "The Records Officer.")
    assert chat.readings("And how often?") == ["Who reviews the ClearChart access log? And how often?"]
    assert chat.readings("How long are children's records kept?") == ["How long are children's records kept?"]


@pytest.mark.parametrize("previous, question, standalone", [
    ("Which tube is used for a full blood count?", "And for kidney and liver tests?",
     "Which tube is used for kidney and liver tests?"),  # a phrase from a preposition on
    ("What does Code Violet mean?", "And Code Indigo?", "What does Code Indigo mean?"),  # a word both share
    ("How long is a standard appointment?", "And a double one?", "How long is a double appointment?"),  # "one"
    ("Where are the red boxes stored?", "What about the blue ones?", "Where are the blue boxes stored?"),
    ("Where is the controlled drugs cabinet kept?", "And the fridge?", "Where is the fridge kept?"),
    ("Who leads the laboratory?", "And the extension?", "Who leads the extension?"),  # the search may refuse it
    ("When does the appointment line open?", "And the repeat prescriptions line?",  # the verb stays
     "When does the repeat prescriptions line open?"),
    ("When does the clinic close on the first Wednesday of the month?", "And the second Wednesday?",  # only the
     "When does the clinic close on the second Wednesday of the month?"),  # subject's verb is left out
    ("What are the hours of the early shift at the surgery?", "And the late shift?",  # the phrase sharing "shift"
     "What are the hours of the late shift at the surgery?"),
    ("Who reviews the ClearChart access log?", "And how often?",  # a question of its own: glued, not rewritten
     "Who reviews the ClearChart access log? And how often?"),
    ("What is the maximum daily dose of Quorvane?", "and with food?",  # no "with" to replace
     "What is the maximum daily dose of Quorvane? and with food?"),
    ("What is the dose for adults?", "And for?", "What is the dose for adults? And for?"),  # one word: no part
])
def test_a_fragment_takes_the_place_of_what_it_replaces_in_the_previous_question(previous, question, standalone):
    chat = Conversation(2)
    chat.add(previous, "an answer")
    readings = chat.readings(question)
    assert readings[0] == standalone
    assert readings[-1] == f"{previous} {question}"  # the glued reading comes last, for when the first finds nothing


@pytest.mark.parametrize("previous, question, standalone", [
    ("When is the clinic open on Saturdays?", "What about Sundays?", "When is the clinic open on Sundays?"),
    ("What is the maximum daily dose of Quorvane for adults?", "And children?",
     "What is the maximum daily dose of Quorvane for children?"),
    ("How long are adult records kept?", "What about parking?",  # near none of its words: glued
     "How long are adult records kept? What about parking?"),
])
def test_a_fragment_naming_a_sibling_takes_the_place_of_its_nearest_words(embedder, previous, question, standalone):
    chat = Conversation(2)
    chat.add(previous, "an answer")
    assert chat.readings(question, embedder.embed)[0] == standalone
    assert chat.readings(question) == [f"{previous} {question}"]  # without an embedding model: glued
