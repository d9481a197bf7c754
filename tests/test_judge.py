"""The learned judge: its scripts build seeded data from SQuAD-explorer pages without ever reading a reserved or
evaluation article, train it end to end, and the folder they write loads offline, refuses altered files and, named
in the config, decides what the bot answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from docbot.errors import ModelNotFoundError
from docbot.rag.judge import WEIGHTS, load_judge
from test_suite import RESERVED

REPO = Path(__file__).resolve().parents[1]
ALLOWLIST = json.loads((REPO / "eval_sets" / "squad_allowlist.json").read_text(encoding="utf-8"))
V1_ARTICLES = ["Alpha", "Beta", "Gamma", "Delta"]


def _page(paragraphs: list[tuple[str, list[tuple[str, str | None]]]]) -> str:
    """A page in SQuAD-explorer's markup: paragraphs, each with (question, answer or None) pairs."""
    html = []
    for n, (text, questions) in enumerate(paragraphs):
        html.append(f'<div class="para-wrap"><pre>{text}</pre>')
        for i, (question, answer) in enumerate(questions):
            gold = f'<span class="answer">{answer}</span>' if answer else '<span class="no-answer">-</span>'
            html.append(f'<div class="qa-wrap" data-id="{n}-{i}"><strong class="question">{question}</strong>'
                        f'{gold}</div>')
        html.append("</div>")
    return "<html><body>" + "".join(html) + "</body></html>"


def _article(name: str, answerable: bool) -> str:
    return _page([(f"The {name} harbour was built in 1850 by the Osric company.",
                   [(f"When was the {name} harbour built?", "1850"),
                    (f"When was the {name} lighthouse built?", "1850" if answerable else None)]),
                  (f"The {name} market opens on Tuesdays and sells fish.",
                   [(f"When does the {name} market open?", "Tuesdays")])])


def _squad_repo(root: Path) -> tuple[Path, str, str]:
    """A git repository laid out as SQuAD-explorer: the allowlist's training articles at one commit (v2.0 paths),
    SQuAD 1.1 articles at another, among them a reserved title and a suite dev article, which must never be read."""
    work = root / "squad"
    subprocess.run(["git", "init", "-q", str(work)], check=True)

    def commit(files: dict[str, str]) -> str:
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text, encoding="utf-8")
        subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
                       check=True)
        return subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()

    v2 = commit({ALLOWLIST["source"]["path"].format(article=t): _article(t, False) for t in ALLOWLIST["train"]})
    v1 = commit({f"explore/1.0/train/{t}.html": _article(t, True)
                 for t in [*V1_ARTICLES, ALLOWLIST["reserved"][0], ALLOWLIST["dev"][0]]})
    return work / ".git", v2, v1


def _articles(manifest: dict) -> set[str]:
    named = {a for source in manifest["sources"].values() for a in source["articles"]}
    return named | {a for file in manifest["files"].values() for a in file["articles"]}


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    """The scripts run end to end on a tiny seeded subsample: (data manifest, training manifest, judge folder)."""
    sys.path.insert(0, str(REPO))
    from scripts.build_judge_data import build
    from scripts.train_judge import train

    root = tmp_path_factory.mktemp("judge")
    repo, v2, v1 = _squad_repo(root)
    data = build(repo, root / "data", v1_articles=0, per_article=2, valid_share=0.2, seed=7, v1_commit=v1,
                 v2_commit=v2)
    again = build(repo, root / "again", v1_articles=0, per_article=2, valid_share=0.2, seed=7, v1_commit=v1,
                  v2_commit=v2)
    assert again["files"] == data["files"]  # seeded: the same pairs, byte for byte
    trained = train(root / "data", root / "judge", pairs=32, minutes=1, learning_rate=1e-4, batch=16, seed=7)
    return data, trained, root / "judge"


@pytest.mark.slow
def test_the_judge_data_reads_no_reserved_or_evaluation_article_and_mixes_its_pairs(tiny_judge):
    data, trained, folder = tiny_judge
    evaluated = set(ALLOWLIST["dev"]) | set(ALLOWLIST["test"])
    for manifest in (data, trained["data"]):
        assert not _articles(manifest) & (RESERVED | evaluated)
    assert data["sources"]["squad-1.1"]["articles"] == sorted(V1_ARTICLES)
    rows = [json.loads(line) for part in ("train", "valid")
            for line in (folder.parent / "data" / f"{part}.jsonl").read_text().splitlines()]
    kinds = {(r["kind"], r["label"]) for r in rows}
    assert {("answers", 1), ("adversarial", 0)} <= kinds
    assert {kind for kind, label in kinds if label == 0} - {"adversarial"}  # unanswering passages too
    assert 0.3 < sum(r["label"] for r in rows) / len(rows) < 0.7


@pytest.mark.slow
def test_the_trained_judge_loads_offline_and_refuses_an_altered_file(tiny_judge, tmp_path):
    _, trained, folder = tiny_judge
    assert trained["training"]["steps"] == 2 and trained["valid"]["pairs"] > 0
    assert set(trained["files"]) == {WEIGHTS}
    scores = load_judge(folder).score("When was the Alpha harbour built?", ["The harbour was built in 1850.", "x"])
    assert scores.shape == (2,) and ((0 <= scores) & (scores <= 1)).all()
    copy = shutil.copytree(folder, tmp_path / "judge")
    data = bytearray((copy / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (copy / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ModelNotFoundError, match=r"sha256 .* altered or damaged; train the judge again"):
        load_judge(copy)
    (copy / WEIGHTS).unlink()
    with pytest.raises(ModelNotFoundError, match="missing"):
        load_judge(copy)


@pytest.mark.slow
def test_with_a_judge_the_bot_asks_from_the_blocks_it_passes_and_declines_the_rest_unasked(tiny_judge, facts_bot,
                                                                                           monkeypatch):
    from conftest import ScriptedModel

    folder = str(tiny_judge[2])
    question = "What is the maximum daily dose of Quorvane?"
    monkeypatch.setattr(facts_bot, "config", facts_bot.config.replace(judge=folder, judge_threshold=0.0))
    model = ScriptedModel("Up to 35 mg a day.")
    answer = facts_bot.ask(question, model=model)
    assert answer.covered and answer.text == "Up to 35 mg a day." and model.sent  # no rule replaced it
    found = facts_bot.retrieve(question)
    scores = load_judge(folder).score(question, [s.text for s in found])
    assert [s.chunk_id for s in answer.sources] == \
        [found[i].chunk_id for i in sorted(range(len(found)), key=lambda i: -scores[i])]
    own = facts_bot.ask(question, model=ScriptedModel("That is not in the documents."))
    assert not own.covered and own.text.startswith("That is not in the documents of the 'velmora' domain")
    monkeypatch.setattr(facts_bot, "config", facts_bot.config.replace(judge=folder, judge_threshold=1.0))
    unasked = ScriptedModel("35 mg.")
    declined = facts_bot.ask(question, model=unasked)
    assert not declined.covered and not declined.sources and unasked.sent == 0


@pytest.mark.parametrize("recorded, data", [("judge-manifest.json", "data"), ("reader-manifest.json", None)])
def test_the_recorded_manifests_name_no_reserved_or_evaluation_article(recorded, data):
    manifest = json.loads((REPO / "docs" / recorded).read_text(encoding="utf-8"))
    articles = _articles(manifest[data]) if data else {a for s in manifest["judge_data"].values() for a in s["articles"]}
    assert len(articles) > 400
    assert not articles & (RESERVED | set(ALLOWLIST["dev"]) | set(ALLOWLIST["test"]))


@pytest.mark.slow
def test_the_reader_script_runs_end_to_end_on_a_tiny_subsample(tiny_judge, tmp_path, smollm2_path):
    """The grounded reader's script: chat examples that copy the answering sentence or decline, a LoRA trained with
    docbot's own `train_lora`, and its GGUF form, each file in the manifest with its hash."""
    import gguf

    from docbot.config import Config
    from docbot.files import sha256_file
    from docbot.rag.prompts import DECLINE_REPLY
    from scripts.train_reader import LORA, train

    _, _, folder = tiny_judge
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / Path(smollm2_path).name).symlink_to(smollm2_path)
    config = Config(base_model="SmolLM2-135M-Instruct", models_dir=str(tmp_path / "models"), batch_size=2,
                    max_seq_length=512)
    manifest = train(folder.parent / "squad" / ".git", folder.parent / "data", tmp_path / "reader", examples_n=8,
                     per_article=2, max_steps=2, seed=7, config=config)
    chats = [json.loads(line)["messages"] for line in (tmp_path / "reader" / "train.jsonl").read_text().splitlines()]
    assert len(chats) == 8 and manifest["training"]["global_step"] == 2
    assert any(chat[-1]["content"] == DECLINE_REPLY for chat in chats)
    assert any(chat[-1]["content"] != DECLINE_REPLY and chat[-1]["content"] in chat[1]["content"] for chat in chats)
    assert not {a for source in manifest["judge_data"].values() for a in source["articles"]} & RESERVED
    for name, entry in manifest["files"].items():
        assert sha256_file(tmp_path / "reader" / name) == entry["sha256"]
    assert bytes(gguf.GGUFReader(tmp_path / "reader" / LORA).fields["adapter.type"].parts[-1]) == b"lora"
