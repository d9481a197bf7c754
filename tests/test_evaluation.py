"""Evaluation: metrics on worked examples, question files, and the four arms end to end on the tiny model."""

from __future__ import annotations

import io
import json

import pytest

from conftest import write_facts_domain
from docbot import ConfigurableDocBot, Conversation, DocbotError
from docbot.rag.retrieval import Source
from docbot.tuning.evaluation import ARMS
from docbot.tuning.finetuned import latest_card
from docbot.tuning.heldout import held_out_paraphrases, paraphrase, validation_questions
from docbot.tuning.report import list_evaluations
from docbot.tuning.scoring import (GoldQuestion, bootstrap_interval, exact_match, hit_at_k, load_questions,
                                   normalize_answer, paired_difference, reciprocal_rank, rouge_l, token_f1)


# -- metrics, checked by hand ----------------------------------------------------------------------------------------


def test_normalisation_is_squads():
    # lower case; "," "!" "." removed; the article "The" removed; runs of spaces collapsed
    assert normalize_answer("The  Code, Tangerine!") == "code tangerine"
    assert normalize_answer("An apple a day.") == "apple day"
    assert normalize_answer("POL-204") == "pol204"  # punctuation inside a token goes too, on both sides alike


def test_exact_match():
    assert exact_match("the Code Tangerine.", "Code Tangerine") == 1.0  # equal after normalisation
    assert exact_match("Code Tangerine now", "Code Tangerine") == 0.0
    assert exact_match("", "") == 1.0


def test_token_f1():
    # pred "The maximum dose is 35 mg" -> [maximum, dose, is, 35, mg] (5 tokens); gold "35 mg daily" -> 3 tokens
    # shared {35, mg} = 2: P = 2/5, R = 2/3, F1 = 2PR/(P+R) = (8/15)/(16/15) = 0.5
    assert token_f1("The maximum dose is 35 mg", "35 mg daily") == pytest.approx(0.5)
    # a bag, not a set: pred [mg, mg, mg] vs gold [35, mg] share min(3, 1) = 1: P = 1/3, R = 1/2, F1 = 0.4
    assert token_f1("mg mg mg", "35 mg") == pytest.approx(0.4)
    assert token_f1("nothing shared", "35 mg") == 0.0
    assert token_f1("the", "35 mg") == 0.0  # normalises to no tokens


def test_rouge_l_counts_order_where_f1_does_not():
    # gold [store, at, 3, degrees, celsius], pred [at, 3, degrees, store, it]: LCS = [at, 3, degrees] = 3,
    # P = R = 3/5, ROUGE-L F = 0.6; token F1 shares {at, 3, degrees, store} = 4, P = R = 4/5, F1 = 0.8
    assert rouge_l("at 3 degrees store it", "store at 3 degrees celsius") == pytest.approx(0.6)
    assert token_f1("at 3 degrees store it", "store at 3 degrees celsius") == pytest.approx(0.8)
    # gold [chief, pharmacist, is, odalys, penhallow] (5), pred [odalys, penhallow] (2): LCS 2,
    # P = 2/2, R = 2/5, F = 2 * 1 * 0.4 / 1.4 = 4/7
    assert rouge_l("Odalys Penhallow", "The chief pharmacist is Odalys Penhallow.") == pytest.approx(4 / 7)
    assert rouge_l("Code Tangerine", "code tangerine") == 1.0
    assert rouge_l("x y", "a b") == 0.0


def _src(file: str, page: int | None = None) -> Source:
    return Source(file, page, f"{file}:{page}", 0.5, "", "")


def test_hit_at_k_and_mrr():
    ranked = [_src("a.txt"), _src("b.pdf", 2), _src("b.pdf", 1)]
    on_page = GoldQuestion("1", "q", "x", "b.pdf", 1)
    any_page = GoldQuestion("2", "q", "x", "b.pdf", None)
    missing = GoldQuestion("3", "q", "x", "c.md", None)
    # gold b.pdf page 1 is third: RR = 1/3, hit@1 = hit@2 = 0, hit@3 = 1
    assert reciprocal_rank(ranked, on_page) == pytest.approx(1 / 3)
    assert [hit_at_k(ranked, on_page, k) for k in (1, 2, 3)] == [0.0, 0.0, 1.0]
    # no gold page: any page of b.pdf counts, the first is second: RR = 1/2
    assert reciprocal_rank(ranked, any_page) == 0.5 and hit_at_k(ranked, any_page, 2) == 1.0
    assert reciprocal_rank(ranked, missing) == 0.0 and hit_at_k(ranked, missing, 3) == 0.0
    # MRR over the three: (1/3 + 1/2 + 0) / 3 = 5/18
    ranks = [reciprocal_rank(ranked, q) for q in (on_page, any_page, missing)]
    assert sum(ranks) / 3 == pytest.approx(5 / 18)


def test_bootstrap_interval_matches_theory_and_scipy():
    # 400 answers, 70% right: the normal approximation gives 0.7 +- 1.96 * sqrt(0.7 * 0.3 / 400) = 0.7 +- 0.045
    values = [1] * 280 + [0] * 120
    ci = bootstrap_interval(values, 2000, seed=0)
    assert ci["mean"] == 0.7 and ci["n"] == 400
    assert ci["low"] == pytest.approx(0.655, abs=0.01) and ci["high"] == pytest.approx(0.745, abs=0.01)
    # a small, skewed sample against scipy's percentile bootstrap (its own resampler): the same interval within 0.05
    from scipy.stats import bootstrap

    small = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1]
    theirs = bootstrap((small,), lambda x: sum(x) / len(x), n_resamples=5000, method="percentile",
                       random_state=1, vectorized=False).confidence_interval
    ours = bootstrap_interval(small, 5000, seed=0)
    assert ours["low"] == pytest.approx(theirs.low, abs=0.05) and ours["high"] == pytest.approx(theirs.high, abs=0.05)
    assert bootstrap_interval([0.5] * 9, 100) == {"mean": 0.5, "low": 0.5, "high": 0.5, "n": 9}
    assert bootstrap_interval([0.25] * 7) == {"mean": 0.25, "low": 0.25, "high": 0.25, "n": 7}
    assert bootstrap_interval([])["mean"] is None


def test_paired_difference_has_its_interval_and_the_smallest_detectable_effect():
    # 100 questions: the tuned arm fixes 20 and breaks 5 of the base's answers, so +0.15 with per-question
    # differences of sd sqrt(0.25 - 0.15^2) ~ 0.477: standard error 0.048, detectable 2.8 x 0.048 = 0.13
    before = [0] * 20 + [1] * 5 + [1] * 40 + [0] * 35
    after = [1] * 20 + [0] * 5 + [1] * 40 + [0] * 35
    d = paired_difference(after, before, 2000, seed=0)
    assert d["mean"] == 0.15 and d["n"] == 100
    assert d["low"] == pytest.approx(0.15 - 1.96 * 0.048, abs=0.02) and d["high"] == pytest.approx(0.245, abs=0.02)
    assert d["detectable"] == pytest.approx(0.134, abs=0.002)
    assert "detectable" not in paired_difference([1, 0, 1], [1, 0, 1])  # identical arms: no spread to judge by


def test_paraphrases_reword_and_never_repeat_the_question():
    cases = {
        "What is the maximum daily dose of Quorvane?": "Tell me the maximum daily dose of Quorvane.",
        "Who is the chief pharmacist of the Velmora clinic?": "Tell me who the chief pharmacist of the Velmora "
                                                              "clinic is.",
        "When must the Brindleweed vaccine be stored?": "Tell me when the Brindleweed vaccine must be stored.",
        'What does the section "Emergencies" say?': 'Summarise the section "Emergencies".',
    }
    for question, expected in cases.items():
        assert paraphrase(question) == expected
    odd = "How many beds does the ward have?"
    assert paraphrase(odd) != odd and normalize_answer(paraphrase(odd)) != normalize_answer(odd)


# -- question files ---------------------------------------------------------------------------------------------------


def test_a_question_file_with_a_bad_line_is_refused_naming_the_line(tmp_path):
    good = '{"question": "Who is the chief pharmacist?", "answer": "Odalys Penhallow", "source": "team/staff.md"}'
    for bad, reason in [("null", "got null"), ("[1, 2]", "got list"), ('{"answer": "x"}', "'question' is missing"),
                        ('{"question": "q", "page": "2"}', "'page' must be an integer"), ("{oops", "invalid JSON"),
                        ('"just text"', "got str")]:
        path = tmp_path / "questions.jsonl"
        path.write_text("\ufeff" + good + "\n\n" + good + "\n" + bad + "\n", encoding="utf-8")
        with pytest.raises(DocbotError, match=rf"questions\.jsonl:4: not a question line \(.*{reason}"):
            load_questions(path)
    path.write_text("\ufeff" + good + "\n" + '{"question": "Off topic?", "answer": null, "source": null}\n',
                    encoding="utf-8")  # a byte order mark and null fields are fine
    first, off_topic = load_questions(path)
    assert first == GoldQuestion("1", "Who is the chief pharmacist?", "Odalys Penhallow", "team/staff.md", None)
    assert off_topic.answer is None and off_topic.source is None
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DocbotError, match="no questions"):
        load_questions(path)


# -- the four arms, end to end on the tiny model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bot(tmp_path_factory, tiny_model):
    """The facts domain with the tiny model as base, its data prepared (rules) and an adapter trained 2 steps."""
    root = tmp_path_factory.mktemp("evaluation")
    docs = write_facts_domain(root / "Documents" / "Velmora")
    bot = ConfigurableDocBot(provider="transformers", base_model=tiny_model, answer_model=tiny_model,
                             documents_dir=str(root / "Documents"),
                             index_dir=str(root / "index"), models_dir=str(root / "models"),
                             data_dir=str(root / "fine_tuning_data"), max_new_tokens=8)
    bot.load_domain("velmora", docs, progress=False)
    bot.prepare_fine_tuning_data(formats=("chat",), generator="rules", progress=False)
    version = bot.train(max_steps=2, max_seq_length=512, batch_size=2, learning_rate=1e-2)
    return bot, root, version


def test_held_out_sets_come_from_the_card(tiny_bot):
    bot, root, _ = tiny_bot
    card = latest_card(bot.config.data_dir, "velmora")
    data = json.loads(card.read_text())
    validation_docs = {s["file"] for s in data["sources"] if s["split"] == "validation"}
    train_rows = [json.loads(line) for line in (card.parent / next(n for n in data["files"] if n.endswith(
        "_train.jsonl"))).read_text().splitlines() if line]
    trained = {normalize_answer(r["question"]) for r in train_rows}
    assert all(r["messages"][-2]["content"].endswith(r["question"]) for r in train_rows)  # the prompt's own question
    paraphrases = held_out_paraphrases(card)
    assert paraphrases and all(normalize_answer(q.question) not in trained for q in paraphrases)
    assert all(q.source not in validation_docs for q in paraphrases)
    assert all(q.source in validation_docs for q in validation_questions(card))


def test_four_arms_write_report_json_and_chart(tiny_bot, tmp_path):
    bot, root, version = tiny_bot
    before = sorted(p.name for p in (root / "models").iterdir())
    manifest = (version.path / "docbot_model.json").read_bytes()
    report = bot.evaluate(n_bootstrap=200, progress=False)

    assert report.path.parent.parent == root / "evaluations"  # beside the data folder, like the notebook
    data = json.loads(report.path.read_text())
    assert data["model"]["version"] == version.name and data["model"]["adapter_sha256"]
    assert data["arms"] == list(ARMS)
    names = [s["name"] for s in data["sets"]]
    assert "paraphrases" in names
    for s in data["sets"]:
        assert s["n"] > 0 and set(s["arms"]) == set(ARMS)
        for arm in ARMS:
            for metric in ("exact_match", "f1", "rouge_l"):
                ci = s["arms"][arm][metric]
                assert ci["low"] <= ci["mean"] <= ci["high"] and ci["n"] == s["n"]
            assert ("hit_at_k" in s["arms"][arm]) == arm.endswith("+retrieval")
        assert s["arms"]["base+retrieval"]["hit_at_k"]["mean"] > 0
        assert all(set(q["predictions"]) == set(ARMS) for q in s["questions"])
        for tuned, base in (("fine-tuned+retrieval", "base+retrieval"), ("fine-tuned", "base")):
            f1 = s["differences"][f"{tuned} - {base}"]["f1"]  # question by question, the same questions
            assert f1["mean"] == pytest.approx(s["arms"][tuned]["f1"]["mean"] - s["arms"][base]["f1"]["mean"],
                                               abs=1e-3) and f1["low"] <= f1["mean"] <= f1["high"]
    # the evaluation measures the chat: each arm answers exactly as `ask` does with the same model and options
    first = next(q for q in data["sets"][0]["questions"] if q["answer"] and "not in the documents" not in
                 q["predictions"]["base+retrieval"])
    with_blocks = bot.ask(first["question"], conversation=Conversation(0))
    alone = bot.ask(first["question"], retrieval=False, conversation=Conversation(0))
    assert first["predictions"]["base+retrieval"] == with_blocks.text and with_blocks.sources
    assert first["predictions"]["base"] == alone.text and not alone.sources
    assert set(data["retrieval"]["modes"]) == {"vector", "hybrid"}
    assert data["retrieval"]["modes"]["hybrid"]["hit@5"]["mean"] > 0
    assert (report.path.parent / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.chart == report.path.parent / "chart.png"

    table = report.table()
    assert all(arm in table for arm in ARMS) and "(a) paraphrases" in table and "hybrid" in table
    assert "fine-tuned+retrieval - base+retrieval: answer in reply" in table
    # the link from the registry entry: found by version; nothing registered was touched, the bot's model stays
    assert [p for p, _ in list_evaluations(root / "evaluations", version.name)] == [report.path]
    assert sorted(p.name for p in (root / "models").iterdir()) == before
    assert (version.path / "docbot_model.json").read_bytes() == manifest
    assert bot.fine_tuned is None and "finetuned" not in str(bot.provider)


def test_a_users_question_file_and_the_repl_command(tiny_bot, tmp_path):
    from docbot.repl import Repl

    bot, root, version = tiny_bot
    questions = tmp_path / "mine.jsonl"
    questions.write_text(
        '{"question": "Who is the chief pharmacist of the Velmora clinic?", "answer": "Odalys Penhallow", '
        '"source": "team/staff.md"}\n'
        '{"question": "What is the emergency code for a fire?", "answer": "Code Tangerine", "source": "team/staff.md"}\n'
        '{"question": "How do I change a tyre?", "answer": null, "source": null}\n', encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    repl = Repl(bot, out, err)
    repl.cmd_evaluate(f"'{questions}'")
    text = out.getvalue()
    assert f"questions from {questions}: 2 answerable and 1 off-topic question(s)" in text
    assert all(arm in text for arm in ARMS) and "report: " in text
    reports = list_evaluations(root / "evaluations", version.name)
    assert reports[0][1]["sets"][0]["name"] == "mine" and len(reports) >= 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok?", "answer": "yes"}\nnull\n', encoding="utf-8")
    with pytest.raises(DocbotError, match=r"bad\.jsonl:2: not a question line"):
        repl.cmd_evaluate(str(bad))


def test_without_a_fine_tuned_version_the_base_arms_run_alone(tmp_path, tiny_model):
    docs = write_facts_domain(tmp_path / "Documents" / "Velmora")
    bot = ConfigurableDocBot(provider="transformers", model=tiny_model, base_model=tiny_model,
                             documents_dir=str(tmp_path / "Documents"), index_dir=str(tmp_path / "index"),
                             models_dir=str(tmp_path / "models"), data_dir=str(tmp_path / "data"), max_new_tokens=8)
    bot.load_domain("velmora", docs, progress=False)
    with pytest.raises(DocbotError, match="no test questions for domain 'velmora'.*pass a JSONL file"):
        bot.evaluate()  # no data prepared, no test set: nothing to ask
    assert not (tmp_path / "evaluations").exists()

    bot.prepare_fine_tuning_data(formats=("chat",), generator="rules", progress=False)
    report = bot.evaluate(n_bootstrap=100, progress=False)
    data = json.loads(report.path.read_text())
    assert data["arms"] == ["base", "base+retrieval"] and data["model"]["version"] is None
    assert all(set(s["arms"]) == {"base", "base+retrieval"} for s in data["sets"])
    assert any("base arms ran alone" in note for note in data["notes"])
    rows = [line.split()[0] for line in report.table().splitlines() if line.startswith("  ")]
    assert "alone (no fine-tuned version yet)" in report.table() and "base+retrieval" in rows
    assert not any(row.startswith("fine-tuned") for row in rows)
