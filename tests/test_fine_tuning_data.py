"""Training data from an indexed domain: formats, grounding, the user's pairs, splits, limits, versions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from docbot import ConfigurableDocBot, DocbotError
from docbot.files import sha256_file
from docbot.rag.prompts import DECLINE_REPLY, INSTRUCTIONS
from docbot.tuning.datasets import DECLINE_SHARE, validate_jsonl
from docbot.tuning.judge import judge
from docbot.tuning.qa_generation import QAPair, grounded, parse_llm_json, rules_pairs

USER_PAIRS = [
    {"question": "Which pharmacist signs the Quorvane stock book?", "answer": "Odalys Penhallow signs it weekly.",
     "source": "team/staff.md"},
    {"question": "Is the Velmora car park free?", "answer": "Yes, for patients."},
]
KEYS = {"instruction": {"instruction", "input", "output"}, "qa": {"question", "context", "answer"},
        "chat": {"messages"}}


def bot_writing_to(facts_bot, data_dir):
    """A bot on the facts domain's index (already built, so loading it embeds nothing) writing data to data_dir."""
    bot = ConfigurableDocBot(config=facts_bot.config.replace(data_dir=str(data_dir)))
    bot.load_domain(facts_bot.domain, facts_bot.documents_path, progress=False)
    return bot


@pytest.fixture(scope="module")
def prepared(facts_index_bot, tmp_path_factory):
    bot = bot_writing_to(facts_index_bot, tmp_path_factory.mktemp("ft") / "fine_tuning_data")
    return bot, bot.prepare_fine_tuning_data(qa_pairs=USER_PAIRS, progress=False)


def rows(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_three_formats_written_valid_and_loadable(prepared):
    from datasets import load_dataset

    _, files = prepared
    for fmt, keys in KEYS.items():
        for split in ("train", "validation"):
            path = files[f"{fmt}_{split}"]
            assert path.split("/")[-1].startswith(f"{fmt}_data_")
            assert validate_jsonl(path) == []
            assert all(keys <= set(r) for r in rows(path))
        loaded = load_dataset("json", data_files={"train": files[f"{fmt}_train"]})
        assert loaded["train"].num_rows == len(rows(files[f"{fmt}_train"])) > 0


def test_model_free_pairs_are_grounded_and_never_give_away_their_answer(prepared):
    _, files = prepared
    generated = [r for s in ("train", "validation") for r in rows(files[f"qa_{s}"])
                 if r["generator"] == "rules" and not r["declines"]]
    assert len(generated) >= 5
    for r in generated:
        assert r["answer"].lower() in r["context"].lower() and grounded(r["answer"], r["context"])
        assert r["answer"].lower() not in r["question"].lower()


def test_user_pairs_are_kept_verbatim_and_chat_prompts_match_the_bot(prepared):
    bot, files = prepared
    chat = rows(files["chat_train"]) + rows(files["chat_validation"])
    for pair in USER_PAIRS:
        match = [r for r in chat if r["generator"] == "user" and r["messages"][-1]["content"] == pair["answer"]]
        assert len(match) == 1 and match[0]["messages"][-2]["content"].endswith(pair["question"])
    plain = next(r for r in chat if not r["raft"])
    assert plain["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    assert "<<<BLOCK 1>>>" in plain["messages"][1]["content"] and "<<<BLOCK 2" not in plain["messages"][1]["content"]
    raft = [r for r in chat if r["raft"] and not r["declines"]]
    assert raft and all("<<<BLOCK 2>>>" in r["messages"][1]["content"] for r in raft)


def test_a_stated_share_of_examples_teaches_the_decline_on_other_documents_blocks(prepared):
    _, files = prepared
    chat = rows(files["chat_train"]) + rows(files["chat_validation"])
    answered = [r for r in chat if r["generator"] != "user" and not r["raft"]]
    declines = [r for r in chat if r["declines"]]
    assert declines
    assert 0 <= len(declines) - DECLINE_SHARE * len(answered) < 2  # the share, rounded up in each of the 2 splits
    by_question = {r["question"]: r for r in answered}
    for r in declines:
        assert r["messages"][-1]["content"] == DECLINE_REPLY and r["raft"]
        original = by_question[r["question"]]
        prompt = r["messages"][1]["content"]
        assert original["source"] not in prompt and original["messages"][-1]["content"] not in prompt
    card = json.loads(Path(files["card"]).read_text())
    assert sum(card["decline_examples"].values()) == len(declines)


def test_no_document_is_in_both_splits_and_the_card_describes_the_data(prepared):
    _, files = prepared
    train = {r["source"] for r in rows(files["qa_train"])}
    validation = {r["source"] for r in rows(files["qa_validation"])}
    assert train and validation and not train & validation
    card = json.loads(open(files["card"]).read())
    assert card["counts"]["chat"] == {"train": len(rows(files["chat_train"])),
                                      "validation": len(rows(files["chat_validation"]))}
    assert {s["file"] for s in card["sources"]} == {"handbook.pdf", "storage.txt", "team/staff.md"}
    assert all(len(s["sha256"]) == 64 for s in card["sources"]) and card["generator"]["kept"]["user"] == 2


def test_the_documents_held_out_for_validation_can_be_chosen(facts_bot, tmp_path):
    bot = bot_writing_to(facts_bot, tmp_path / "data")
    files = bot.prepare_fine_tuning_data(formats=("qa",), held_out=["team/staff.md"], progress=False)
    assert {r["source"] for r in rows(files["qa_validation"])} == {"team/staff.md"}
    assert {r["source"] for r in rows(files["qa_train"])} == {"handbook.pdf", "storage.txt"}
    for wrong, says in ((["staff.md"], "held_out names staff.md, not a document of this domain; choose from "
                                      "handbook.pdf, storage.txt, team/staff.md"),
                        (["handbook.pdf", "storage.txt", "team/staff.md"], "leave at least one for training")):
        with pytest.raises(DocbotError, match=says):
            bot.prepare_fine_tuning_data(formats=("qa",), held_out=wrong, progress=False)
    assert len(list((tmp_path / "data").glob("qa_data_*"))) == 2  # a refused request writes nothing


def test_max_examples_caps_the_data_but_keeps_user_pairs(facts_bot, tmp_path):
    bot = bot_writing_to(facts_bot, tmp_path / "data")
    files = bot.prepare_fine_tuning_data(qa_pairs=USER_PAIRS, max_examples=4, formats=("qa",), progress=False)
    kept = rows(files["qa_train"]) + rows(files["qa_validation"])
    assert len(kept) <= 4 and sum(r["generator"] == "user" for r in kept) == 2
    assert "chat_train" not in files


def test_a_second_run_writes_new_files_and_leaves_the_first_untouched(prepared):
    bot, first = prepared
    before = {k: open(v, "rb").read() for k, v in first.items() if k != "colab_notebook"}
    second = bot.prepare_fine_tuning_data(progress=False)
    assert set(second.values()).isdisjoint(v for k, v in first.items() if k != "colab_notebook")
    assert before == {k: open(v, "rb").read() for k, v in first.items() if k != "colab_notebook"}
    assert second["colab_notebook"] == first["colab_notebook"]  # the guide's path always holds the latest


def test_two_runs_at_the_same_moment_get_their_own_stamps(facts_bot, tmp_path, monkeypatch):
    import time
    from concurrent.futures import ThreadPoolExecutor

    from docbot.tuning import datasets

    def slow_free_stamp(folder, domain):  # widen the race: a stamp is chosen, then its files take a while
        stamp = free_stamp(folder, domain)
        time.sleep(0.5)
        return stamp

    free_stamp = datasets._free_stamp
    monkeypatch.setattr(datasets, "_free_stamp", slow_free_stamp)
    bots = [bot_writing_to(facts_bot, tmp_path / "data") for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda b: b.prepare_fine_tuning_data(formats=("qa",), progress=False), bots))
    assert len({r["card"] for r in runs}) == 3
    assert all(json.loads(open(r["card"]).read())["files"] == {
        Path(p).name: sha256_file(Path(p)) for k, p in r.items() if k.startswith("qa_")} for r in runs)


def test_bad_user_pairs_are_refused_naming_index_and_field(facts_bot, tmp_path):
    bot = bot_writing_to(facts_bot, tmp_path / "data")
    with pytest.raises(DocbotError, match=r"qa_pairs\[1\]: field 'answer' is missing or empty"):
        bot.prepare_fine_tuning_data(qa_pairs=[USER_PAIRS[0], {"question": "Why?", "answer": " "}])
    with pytest.raises(DocbotError, match=r"qa_pairs\[0\]: field 'question'"):
        bot.prepare_fine_tuning_data(qa_pairs=[{"answer": "x"}])
    assert not (tmp_path / "data").exists()  # nothing written


def test_validate_reports_every_problem_as_file_and_line(tmp_path):
    bad = tmp_path / "chat_data_bad.jsonl"
    bad.write_bytes(b'\xef\xbb\xbf{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", '
                    b'"content": "a"}]}\n{"messages": [\nnull\n[1, 2]\n{"messages": [{"role": "user", '
                    b'"content": "q"}]}\n{"other": 1}\n')
    problems = validate_jsonl(bad)
    assert problems[0] == f"{bad}:1: starts with a UTF-8 byte order mark; save the file without it"
    assert [p.split(":")[1] for p in problems[1:]] == ["2", "3", "4", "5", "6"]
    assert "not valid JSON" in problems[1] and "expected a JSON object, got NoneType" in problems[2]
    assert "last message must be the assistant" in problems[4] and "'messages'" in problems[5]
    done = subprocess.run([sys.executable, str(REPO / "fine_tuning.py"), "validate", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and f"{bad}:2: not valid JSON" in done.stderr


@pytest.mark.parametrize("reply, expected", [
    ('Sure! Here are the pairs:\n[{"question": "Q1?", "answer": "A1", "paraphrase": "P1?"},\n'
     ' {"question": "Q2?", "answer": "A2"}]\nHope this helps.', [("Q1?", "A1", "P1?"), ("Q2?", "A2", None)]),
    ('[{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "ans', [("Q1?", "A1", None)]),  # truncated
    ('```json\n{"q": "Q1?", "response": "A1",\n}\n```', [("Q1?", "A1", None)]),  # wrong keys, trailing comma
    ('{"title": "x", "text": "y"}', []),
    ("Question: Q1?\n\nAnswer: A1.", [("Q1?", "A1.", None)]),
    ("I cannot help with that.", []),
])
def test_llm_reply_parser_keeps_what_it_can(reply, expected):
    assert parse_llm_json(reply) == expected


@pytest.mark.slow
def test_llm_generator_on_the_sample_formulary_keeps_only_grounded_pairs(tmp_path, models_dir):
    docs = tmp_path / "Documents" / "Formulary"
    docs.mkdir(parents=True)
    shutil.copy(REPO / "Documents" / "Medical" / "formulary.pdf", docs)
    bot = ConfigurableDocBot(provider="transformers", documents_dir=str(tmp_path / "Documents"),
                             index_dir=str(tmp_path / "index"), models_dir=str(models_dir),
                             data_dir=str(tmp_path / "data"))
    bot.load_domain("formulary", progress=False)
    files = bot.prepare_fine_tuning_data(generator="llm", formats=("qa",), progress=False)
    card = json.loads(open(files["card"]).read())
    assert card["generator"]["requested"] == "llm" and card["generator"]["kept"].get("llm", 0) >= 1
    for r in rows(files["qa_train"]) + rows(files["qa_validation"]):
        assert r["generator"] == "llm" and grounded(r["answer"], r["context"])


@pytest.mark.parametrize("text, expected", [
    ("Vaccination records are kept until the patient's 30th birthday.",
     [("Until when are Vaccination records kept?", "until the patient's 30th birthday")]),
    ("Oxygen cylinders are stored in Room 114.", [("Where are Oxygen cylinders stored?", "Room 114"),
                                                  ("Oxygen cylinders are stored in which room?", "Room 114")]),
    ("Passwords must be changed every 90 days.", [("When must Passwords be changed?", "every 90 days"),
                                                  ("Passwords must be changed every how many days?", "every 90 days")]),
    ("# Visiting\n\nVisitors are welcome on the unit. Sharps bins are collected every Tuesday at 10:00.",
     [("When are Sharps bins collected?", "every Tuesday at 10:00"),  # a fact: no section filler
      ("Sharps bins are collected every Tuesday at what time?", "10:00"),
      ("Sharps bins are collected every which day at 10:00?", "Tuesday")]),
    ("The Laboratory Lead is Marco Estevanez. Samples are sent to the Westmere Central Laboratory.",
     [("Who is the Laboratory Lead?", "Marco Estevanez"), ("Which lead is Marco Estevanez?", "Laboratory Lead"),
      ("The Laboratory Lead is who?", "Marco Estevanez"),
      ("Samples are sent to which laboratory?", "Westmere Central Laboratory")]),
    ("# Visiting\n\n**Policy code:** POL-117\n**Owner:** Ingrid Salcombe, Observation Unit Ward Manager\n",
     [('What is the policy code of "Visiting"?', "POL-117"), ('Who is the owner of "Visiting"?', "Ingrid Salcombe")]),
    ("Code Teal means a patient is missing. A lilac-top tube is used for a full blood count.",
     [("What does Code Teal mean?", "a patient is missing"),  # not "Who means ...?"
      ("What is a lilac-top tube used for?", "a full blood count"),
      ("What is used for a full blood count?", "A lilac-top tube")]),
    ("Breaches must be reported within 24 hours. The spill kit is in cupboard C3. The Lead is Dr. Ada Vale.",
     [("When must Breaches be reported?", "within 24 hours"),
      ("Breaches must be reported within how many hours?", "within 24 hours"),
      ("The spill kit is in which cupboard?", "cupboard C3"),
      ("Who is the Lead?", "Dr. Ada Vale"), ("The Lead is who?", "Dr. Ada Vale")]),
    ("# Visiting\n\nVisitors are always welcome on the unit.",
     [('What does the section "Visiting" say?', "Visitors are always welcome on the unit.")]),  # nothing better
])
def test_rules_phrase_each_fact_more_than_once_and_use_the_section_filler_only_without_one(text, expected):
    assert [(p.question, p.answer) for p in rules_pairs(text)] == expected


VELMORA = ("The Velmora clinic opens at 06:45 on weekdays. The chief pharmacist is Odalys Penhallow. "
           "The Brindleweed vaccine must be stored at 3 degrees Celsius. Sharps bins are collected every Tuesday.")


@pytest.mark.parametrize("question, answer, reason", [
    # good pairs, one per kind of fact, some in other words than the chunk's: kept
    ("When does the Velmora clinic open on weekdays?", "06:45", None),
    ("Who is the chief pharmacist?", "Odalys Penhallow", None),
    ("At what temperature must the Brindleweed vaccine be stored?", "3 degrees Celsius", None),
    ("How often are the sharps bins collected?", "every Tuesday", None),
    # the answer is not in the chunk
    ("When does the Velmora clinic open on weekdays?", "07:30", "answer not in its chunk"),
    ("Who is the chief pharmacist?", "Imke Varga", "answer not in its chunk"),
    # the question is about something the chunk never mentions
    ("What is the emergency code for a fire at Arnholt?", "06:45", "question not about its chunk"),
    ("Which form requests a non-formulary medicine?", "Odalys Penhallow", "question not about its chunk"),
    # the answer is in the chunk but of the wrong kind
    ("Who is the chief pharmacist?", "06:45", "answer does not fit the question"),
    ("When does the Velmora clinic open on weekdays?", "Odalys Penhallow", "answer does not fit the question"),
    # the question already holds the answer
    ("Is the chief pharmacist Odalys Penhallow?", "Odalys Penhallow", "answer given away by the question"),
    ("Does the Velmora clinic open at 06:45 on weekdays?", "06:45 on weekdays", "answer given away by the question"),
])
def test_the_judge_drops_planted_bad_pairs_of_each_kind_and_keeps_good_ones(question, answer, reason):
    assert judge(QAPair(question, answer, "planted"), VELMORA) == reason
