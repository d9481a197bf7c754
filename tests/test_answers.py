"""Answer quality with the default model (Qwen2.5-Coder-0.5B-Instruct through llama.cpp) on the sample Medical
domain, typed into the chatbot as a user would: facts, a follow-up, a brief new topic, a decline, no loop. The
five-turn session is also typed with the optional Qwen2.5-Coder-1.5B-Instruct, chosen by name."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, ScriptedModel
from docbot import Conversation
from docbot.rag.policy import AnswerPolicy
from docbot.rag.prompts import NOT_COVERED

SESSION = [  # dev items (eval_sets/medical*_dev.jsonl): (typed, facts the answer must contain, the file it must
    # cite; None: a decline)
    ("What illness is Calyprane used to treat?", ["Tallis fever"], "formulary.pdf"),
    ("How long are deceased patients' records kept?", ["10 years"], "patient_records.md"),  # a new topic
    ("Who reviews the ClearChart access log?", ["Records Officer"], "patient_records.md"),
    ("And how often?", ["every week"], "patient_records.md"),  # leans on the turn before
    ("What is the capital of Australia?", [], None),
]


@pytest.fixture(scope="module")
def default_bot(tmp_path_factory):
    """The sample Medical domain answered by the default model, as `python rag_chat.py` would."""
    from docbot import ConfigurableDocBot
    from docbot.config import Config

    defaults = Config()
    bot = ConfigurableDocBot(config=defaults.replace(index_dir=str(tmp_path_factory.mktemp("index")),
                                                     documents_dir=str(REPO / "Documents"),
                                                     models_dir=str(REPO / "models"), provider="llamacpp"))
    bot.load_domain("medical", progress=False)
    return bot


@pytest.mark.slow
@pytest.mark.parametrize("model", [None, "Qwen2.5-Coder-1.5B-Instruct"])  # the default; the larger one, by name
def test_the_five_turn_session_typed_into_the_chatbot(tmp_path, model):
    env = {**os.environ, "DOCBOT_CONFIG": str(REPO / "fine_tuning_config.py"), "NO_COLOR": "1",
           "DOCBOT_HISTORY": str(tmp_path / "history"), "DOCBOT_HOME": str(tmp_path / "home")}
    (tmp_path / "Documents").symlink_to(REPO / "Documents")
    (tmp_path / "models").symlink_to(REPO / "models")  # the larger model's parts are joined there once, as for a user
    typed = "".join(f"{question}\n" for question, _, _ in SESSION) + "quit\n"
    done = subprocess.run([sys.executable, str(REPO / "rag_chat.py"), "--provider", "llamacpp",
                           *(["--model", model] if model else [])], input=typed,
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"model: llamacpp:{model or 'Qwen2.5-Coder-0.5B-Instruct'}" in done.stderr
    replies = done.stdout.split("medical> ")[1:len(SESSION) + 1]
    for (question, facts, source), reply in zip(SESSION, replies):
        answer = reply.split("\nEvidence:")[0].split("\nSources")[0].split("\nNot found")[0]
        if source is None:
            assert answer.strip() == NOT_COVERED.format(domain="medical"), (question, reply)
            assert "Sources" not in reply
            continue
        assert all(fact.lower() in answer.lower() for fact in facts), (question, reply)
        assert re.search(rf"\[1\] {re.escape(source)}", reply), (question, reply)
        sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", answer) if s.strip()]
        assert len(sentences) == len(set(sentences)), (question, reply)  # no repeated sentence reached the user
    assert "error:" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("question", ["What is the maximum daily dose of ibuprofen for adults?",
                                      "How do I bake sourdough bread?",
                                      "Who won the 2018 FIFA World Cup?",
                                      # nearby: the model answers with a neighbouring fact of the same subject
                                      "When is the pharmacy open?"])  # "... empties the blue returns bin ..."
def test_off_topic_questions_are_declined(default_bot, question):
    answer = default_bot.ask(question, conversation=Conversation(0))
    assert not answer.covered and answer.text == NOT_COVERED.format(domain="medical") and not answer.sources


@pytest.mark.slow
def test_an_answer_resting_on_a_sentence_about_another_question_is_declined(default_bot):
    neighbour = default_bot.ask("How many days of sick pay do staff get?", conversation=Conversation(0),
                                model=ScriptedModel("The induction programme for new staff lasts 3 days."))
    assert not neighbour.covered and neighbour.text == NOT_COVERED.format(domain="medical")
    # the evidence sentence names its subject only in the sentence before it, which counts with it
    named_before = default_bot.ask("Who is the Freedom to Speak Up Guardian?", conversation=Conversation(0),
                                   model=ScriptedModel("The Guardian is Nadia Ferreira-Holt."))
    assert named_before.covered and "Nadia Ferreira-Holt" in named_before.text


@pytest.mark.slow
def test_an_answer_copied_from_a_neighbour_of_the_sentence_that_answers_shows_that_sentence(default_bot):
    neighbour = default_bot.ask("What temperature range must medicine fridges be kept at?",
                                model=ScriptedModel("The fridge temperature is recorded twice a day, at 09:00 and at "
                                                    "17:00. So keep it cool."), conversation=Conversation(0))
    assert neighbour.text == "Medicine fridges must be kept between 2 and 8 degrees Celsius."
    assert neighbour.covered and neighbour.evidence.supported
    # the neighbour next to it in its block goes with it: it may hold what the nearest sentence only names
    beside = default_bot.ask("Who is the Freedom to Speak Up Guardian?", conversation=Conversation(0),
                             model=ScriptedModel("The Guardian is Nadia Ferreira-Holt."))
    assert beside.text == ("Staff can raise concerns with the Freedom to Speak Up Guardian. "
                           "The Guardian is Nadia Ferreira-Holt.")
    answered = default_bot.ask("Which tube is used for a full blood count?", conversation=Conversation(0),
                               model=ScriptedModel("The lilac-top tube is the one to use."))
    assert answered.text == "The lilac-top tube is the one to use."  # resting on the sentence that answers: stands
    under_heading = default_bot.ask("How long are records kept?", conversation=Conversation(0),
                                    model=ScriptedModel("Children's records are kept until the patient's 25th "
                                                        "birthday."))
    # the nearest line, the heading "How long records are kept", states nothing: never shown as the answer
    assert "How long records are kept" not in under_heading.text
    assert "Children's records are kept until the patient's 25th birthday." in under_heading.text


@pytest.mark.slow
def test_a_bare_value_is_shown_as_the_documents_sentence_that_holds_it(default_bot):
    question = "How quickly must a suspected data breach be reported to the Data Protection Officer?"
    sentence = "Staff must report a suspected data breach to the Data Protection Officer within 24 hours."
    bare = default_bot.ask(question, model=ScriptedModel("24 hours"), conversation=Conversation(0))
    assert bare.text == sentence and bare.covered and bare.evidence.supported
    # the rest of the answer follows, less a sentence that only repeats the one shown
    followed = default_bot.ask(question, model=ScriptedModel(f"24 hours. {sentence} Use form DB-1."),
                               conversation=Conversation(0), stream=True)
    list(followed)
    assert followed.text == f"{sentence} Use form DB-1."
    digits = default_bot.ask("How many times a day should patients apply Mirtoloxan?", conversation=Conversation(0),
                             model=ScriptedModel("3 times a day"))  # "3" is the documents' "three"
    assert digits.text == "Patients apply a thin layer of Mirtoloxan three times a day."
    tube = default_bot.ask("Which tube is used for a full blood count?", conversation=Conversation(0),
                           model=ScriptedModel("Lilac-top."))
    assert tube.text == "A lilac-top tube is used for a full blood count."
    unheld = default_bot.ask("Which tube is used for a full blood count?", conversation=Conversation(0),
                             model=ScriptedModel("A lilac tube, 4 mL."))  # no sentence holds "4": shown as written
    assert unheld.text == "A lilac tube, 4 mL."


@pytest.mark.slow
def test_a_rule_switched_off_in_the_policy_does_not_act(default_bot, monkeypatch):
    """`bot.policy` holds the rules; one switched off (as benchmarks/ablation.py does) leaves the model's sentence."""
    monkeypatch.setattr(default_bot, "policy", AnswerPolicy().without("fragment_words"))
    bare = default_bot.ask("How quickly must a suspected data breach be reported to the Data Protection Officer?",
                           model=ScriptedModel("24 hours"), conversation=Conversation(0))
    assert bare.text == "24 hours"
    monkeypatch.setattr(default_bot, "policy", AnswerPolicy().without("swap_margin"))
    neighbour = default_bot.ask("What temperature range must medicine fridges be kept at?",
                                model=ScriptedModel("The fridge temperature is recorded twice a day, at 09:00 and at "
                                                    "17:00."), conversation=Conversation(0))
    assert neighbour.text.startswith("The fridge temperature is recorded twice a day")
    monkeypatch.setattr(default_bot, "policy", AnswerPolicy().without("answer_relevance", "answers_itself"))
    assert default_bot.ask("How many days of sick pay do staff get?", conversation=Conversation(0),
                           model=ScriptedModel("The induction programme for new staff lasts 3 days.")).covered


@pytest.mark.slow
def test_checking_an_answer_never_changes_torchs_thread_count_while_the_model_writes(default_bot, monkeypatch):
    """torch's thread count is the process's: changing it while the transformers provider generates in its own
    thread can hang OpenMP (in CI, a Ctrl-C that never stopped a transformers answer)."""
    import torch

    calls: list[int] = []
    set_num_threads = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), set_num_threads(n))[1])
    answer = default_bot.ask("What temperature range must medicine fridges be kept at?", stream=True,
                             model=ScriptedModel("The temperature of the fridge is recorded at 09:00 and at 17:00."),
                             conversation=Conversation(0))
    calls.clear()  # the search has run; what follows runs while the model writes
    list(answer)
    assert answer.text == "Medicine fridges must be kept between 2 and 8 degrees Celsius."
    assert calls == []


@pytest.mark.slow
def test_the_models_decline_in_other_words_is_the_decline(default_bot):
    answer = default_bot.ask("What is the clinic's email address?", conversation=Conversation(0),
                             model=ScriptedModel("The clinic's email address is not in the documents."))
    assert not answer.covered and answer.text == NOT_COVERED.format(domain="medical") and not answer.sources


@pytest.mark.slow
def test_a_follow_up_and_a_brief_new_topic_are_each_searched_right(default_bot):
    chat = Conversation(2)
    default_bot.ask("Which company collects the clinic's clinical waste?", conversation=chat)
    follow_up = default_bot.ask("On which days?", conversation=chat)
    assert "Tuesdays and Fridays" in follow_up.text and follow_up.sources[0].file == "infection_control.pdf"
    new_topic = default_bot.ask("Who is the HR Advisor?", conversation=chat)
    assert "Oskar Penhallow" in new_topic.text and new_topic.sources[0].file == "staff_handbook.pdf"
    default_bot.ask("How long is a standard appointment?", conversation=chat)
    fragment = default_bot.ask("And a double one?", conversation=chat)  # asked as "How long is a double appointment?"
    assert "24 minutes" in fragment.text and fragment.sources[0].file == "opening_hours.txt"
    default_bot.ask("Who is the Reception Supervisor?", conversation=chat)
    attribute = default_bot.ask("And the extension?", conversation=chat)  # "Who is the extension?" finds nothing
    assert chat.turns[-1].question == "Who is the Reception Supervisor? And the extension?"  # so it was read glued
    assert "2100" in attribute.text and attribute.sources[0].file == "opening_hours.txt"


@pytest.mark.slow
def test_evidence_comes_from_the_cited_block_and_a_wrong_answer_is_flagged(default_bot):
    answer = default_bot.ask("What is the maximum daily dose of Zorvexin for adults?", conversation=Conversation(0))
    assert answer.evidence.supported and answer.evidence.sentences
    assert all(sentence in " ".join(answer.sources[0].text.split()) for sentence in answer.evidence.sentences)
    wrong = default_bot.ask("What is the maximum daily dose of Zorvexin for adults?", conversation=Conversation(0),
                            model=ScriptedModel("The maximum daily dose of Zorvexin for adults is 90 mg."))
    assert wrong.covered and not wrong.evidence.supported
    assert "40 mg" in " ".join(wrong.evidence.sentences)  # the closest evidence, shown instead


@pytest.mark.slow
def test_a_chunk_that_scores_low_as_a_whole_counts_when_one_of_its_sentences_answers(default_bot):
    question = "When is the feedback box emptied?"  # its chunk is mostly prescriptions, home visits, parking
    chunk = [s for s in default_bot.retrieve(question) if "feedback box" in s.text]
    assert chunk and chunk[0].score < default_bot.config.relevance_threshold
    answer = default_bot.ask(question, conversation=Conversation(0))
    assert "Friday afternoon" in answer.text and "opening_hours.txt" in [s.file for s in answer.sources]
