"""Local LoRA training, the versioned registry, switching to fine-tuned models and back, on the real SmolLM2, and
the adapter's second form: a GGUF LoRA that llama.cpp applies over SmolLM2's packaged Q4_1 GGUF."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import FACTS, REPO, write_facts_domain
from docbot import ConfigError, ConfigurableDocBot, Conversation, DocbotError
from docbot.providers import LlamaCppProvider
from docbot.tuning import finetuned
from docbot.tuning.finetuned import AGREEMENT_TOLERANCE, LORA_GGUF, llamacpp_agreement
from docbot.tuning.registry import PROBE_MESSAGES, list_versions
from docbot.tuning.training import train_lora

pytestmark = pytest.mark.slow
QUESTION = FACTS[1][0]
FAST = dict(max_steps=2, max_seq_length=512, batch_size=2)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, facts_index_bot, smollm2_path):
    """Three versions: v1.0.0, a retrain on the same data (v1.0.1, at a learning rate that changes SmolLM2's greedy
    answer to the probe, so that its llama.cpp form shows whether the LoRA is applied), and one on new data
    (v1.1.0). llama.cpp runs on one thread: the tests share a small machine."""
    from pathlib import Path

    root = tmp_path_factory.mktemp("registry")
    (root / "models").mkdir()
    (root / "models" / Path(smollm2_path).name).symlink_to(smollm2_path)
    bot = ConfigurableDocBot(config=facts_index_bot.config.replace(data_dir=str(root / "data"),
                                                             models_dir=str(root / "models"), n_threads=1))
    bot.load_domain(facts_index_bot.domain, facts_index_bot.documents_path, progress=False)
    bot.prepare_fine_tuning_data(formats=("chat",), progress=False)
    first = bot.train(**FAST)
    patch = bot.train(learning_rate=1e-2, **FAST)
    bot.prepare_fine_tuning_data(formats=("chat",), progress=False,
                                 qa_pairs=[{"question": "Who runs the Velmora night desk?", "answer": "Ines Varga."}])
    minor = bot.train(**FAST)
    return bot, root, (first, patch, minor)


def test_versions_follow_the_guide_and_describe_themselves(registry):
    bot, root, (first, patch, minor) = registry
    assert [v.name for v in (first, patch, minor)] == [
        "velmora_finetuned_v1.0.0", "velmora_finetuned_v1.0.1", "velmora_finetuned_v1.1.0"]
    assert [v.name for v in bot.fine_tuned_versions()] == [minor.name, patch.name, first.name]  # newest first
    manifest = json.loads((first.path / "docbot_model.json").read_text())
    adapter = manifest["adapter"]
    base_manifest = json.loads((root / "models" / "base_smollm2-135m-instruct" / "docbot_base_model.json").read_text())
    assert adapter["base_model"] == {"name": "SmolLM2-135M-Instruct", "location": adapter["base_model"]["location"],
                                     "fingerprint": base_manifest["gguf_sha256"]}  # the GGUF names the base
    assert adapter["losses"]["final_train"] is not None and adapter["training"]["global_step"] == 2
    assert len(manifest["probe"]["adapted"]) == 32 and manifest["probe"]["adapted"] != manifest["probe"]["base"]
    assert (first.path / "adapter_model.safetensors").is_file()
    assert [p.name for p in (root / "models").glob(".*")] == [".runs"]  # no staging folder left behind
    assert not any((root / "models" / ".runs").iterdir())  # and no finished run's checkpoints
    assert "base SmolLM2-135M-Instruct" in first.describe() and "loss train" in first.describe()


def test_a_version_holds_the_adapter_in_both_forms(registry):
    """The PEFT adapter for transformers and its GGUF LoRA for llama.cpp, with the hash and the measured agreement
    on the probe (teacher-forced: llama.cpp's next token after each of transformers' greedy tokens)."""
    import gguf

    from docbot.files import sha256_file

    _, _, versions = registry
    for version in versions:
        served = version.manifest["gguf_lora"]
        lora = version.path / served["file"]
        assert served["file"] == LORA_GGUF and sha256_file(lora) == served["sha256"]
        fields = gguf.GGUFReader(lora).fields
        assert bytes(fields["general.type"].parts[-1]) == b"adapter"
        assert bytes(fields["adapter.type"].parts[-1]) == b"lora"
        agreement = served["agreement"]
        assert agreement["tokens"] == len(version.manifest["probe"]["greedy"]["tokens"]) > 0
        assert AGREEMENT_TOLERANCE <= agreement["teacher_forced"] <= 1 and agreement["tolerance"] == AGREEMENT_TOLERANCE
        assert "llama.cpp (agrees" in version.describe()


def test_use_fine_tuned_answers_on_llamacpp_with_the_lora_within_the_tolerance(registry):
    bot, _, (_, patch, _) = registry
    on_llamacpp = ConfigurableDocBot(config=bot.config.replace(provider="llamacpp"))
    on_llamacpp.load_domain(bot.domain, bot.documents_path, progress=False)
    provider = on_llamacpp.switch_to_fine_tuned_model(patch.name)
    assert isinstance(provider, LlamaCppProvider) and provider.lora == str(patch.path / LORA_GGUF)
    assert on_llamacpp.ask(QUESTION).model == f"llamacpp:SmolLM2-135M-Instruct+{patch.name}"
    reference = patch.manifest["probe"]["greedy"]  # transformers + the adapter, greedy, on the probe prompt
    tuned = llamacpp_agreement(provider, reference)
    base = on_llamacpp.use_base()
    assert isinstance(base, LlamaCppProvider) and base.lora is None
    untuned = llamacpp_agreement(base, reference)
    assert tuned["teacher_forced"] >= AGREEMENT_TOLERANCE, tuned
    assert untuned["teacher_forced"] < tuned["teacher_forced"], (untuned, tuned)  # the LoRA is what agrees
    n = len(reference["tokens"])
    assert provider.greedy_tokens(reference["prompt_ids"], n) != base.greedy_tokens(reference["prompt_ids"], n)


def test_answer_lora_puts_a_gguf_lora_over_the_answer_model(registry):
    """`answer_lora` (how the grounded reader is tried): a GGUF LoRA that llama.cpp applies over the answer model,
    answering as the registered version does; a provider that cannot apply it is refused."""
    bot, _, (_, patch, _) = registry
    lora = str(patch.path / LORA_GGUF)
    config = bot.config.replace(provider="auto", answer_model="SmolLM2-135M-Instruct", answer_lora=lora)
    provider = ConfigurableDocBot(config=config).provider
    assert isinstance(provider, LlamaCppProvider) and provider.lora == lora
    assert llamacpp_agreement(provider, patch.manifest["probe"]["greedy"])["teacher_forced"] >= AGREEMENT_TOLERANCE
    with pytest.raises(ConfigError, match="only llama.cpp applies"):
        ConfigurableDocBot(config=config.replace(provider="transformers")).provider


def test_an_adapter_llamacpp_cannot_follow_is_refused(registry, tmp_path):
    """rsLoRA scales by alpha/sqrt(r) in PEFT but llama.cpp applies alpha/r: a real adapter whose GGUF form
    answers differently, which the agreement check refuses before anything is registered."""
    import torch
    from safetensors.torch import load_file, save_file

    bot, root, (first, _, _) = registry
    foreign = tmp_path / "rslora"
    shutil.copytree(first.path, foreign)
    (foreign / "docbot_model.json").unlink()
    weights = load_file(foreign / "adapter_model.safetensors")
    generator = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(v.shape, generator=generator) * 0.3 if "lora_B" in k else v for k, v in weights.items()},
              foreign / "adapter_model.safetensors")
    config = json.loads((foreign / "adapter_config.json").read_text())
    (foreign / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}))
    before = sorted(p.name for p in (root / "models").iterdir())
    with pytest.raises(DocbotError, match=r"sets use_rslora.*was not registered.*provider 'transformers'"):
        finetuned.resolve(foreign, bot.config.replace(provider="llamacpp"), bot.domain)  # what use-fine-tuned runs
    assert sorted(p.name for p in (root / "models").iterdir()) == before  # no version, no staging folder


def test_switching_changes_the_model_and_use_base_returns(registry):
    bot, _, (first, _, _) = registry
    base_answer = bot.ask(QUESTION)
    provider = bot.switch_to_fine_tuned_model(first.name)
    tuned = bot.ask(QUESTION)
    assert "velmora_finetuned_v1.0.0" in tuned.model and "velmora_finetuned" not in base_answer.model
    ids = provider.prompt_ids(PROBE_MESSAGES)
    base = bot.use_base()
    assert "finetuned" not in str(base) and str(bot.ask(QUESTION)) == str(base_answer)
    import torch

    with torch.inference_mode():
        assert not torch.allclose(provider.lm(**ids).logits, base.lm(**ids).logits)


def test_notebook_zip_is_imported_into_the_registry_and_used(registry, tmp_path):
    bot, root, (_, _, minor) = registry
    card = sorted((root / "data").glob("dataset_card_*.json"))[0]
    chat = {s: next((root / "data").glob(f"chat_data_{card.stem[13:]}_{s}.jsonl")) for s in ("train", "validation")}
    location = str(root / "models" / "base_smollm2-135m-instruct")
    manifest = json.loads((minor.path / "docbot_model.json").read_text())["adapter"]
    train_lora(chat["train"], chat["validation"], location, tmp_path / "colab", base_model_name="SmolLM2-135M-Instruct",
               base_fingerprint=manifest["base_model"]["fingerprint"], card_sha256="c" * 64, learning_rate=5e-4,
               batch_size=2, num_epochs=1, lora_rank=4, lora_alpha=8, lora_dropout=0.0,
               lora_target_modules=["q_proj", "v_proj"], max_seq_length=512, max_steps=1)
    zipped = tmp_path / "rag_chatbot_fine_tuned.zip"  # the layout the notebook's save cell writes
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in (tmp_path / "colab" / "adapter").iterdir():
            zf.write(f, f"rag_chatbot_fine_tuned/{f.name}")
    provider = bot.switch_to_fine_tuned_model(zipped)
    imported = bot.fine_tuned
    assert imported.name == "velmora_finetuned_v1.2.0"  # new data (another card) on the same base: MINOR
    assert imported.manifest["source"] == "zip rag_chatbot_fine_tuned.zip" and "v1.2.0" in str(provider)
    assert bot.switch_to_fine_tuned_model(zipped) and bot.fine_tuned.path == imported.path  # not registered twice
    bot.use_base()


def test_an_adapter_for_another_base_is_refused_before_loading(registry, tmp_path):
    bot, root, (first, _, _) = registry
    wrong = tmp_path / "wrong_base"
    shutil.copytree(first.path, wrong)
    (wrong / "docbot_model.json").unlink()
    manifest = json.loads((wrong / "docbot_adapter.json").read_text())
    manifest["base_model"]["fingerprint"] = "f" * 64
    (wrong / "docbot_adapter.json").write_text(json.dumps(manifest))
    before = [v.name for v in list_versions(root / "models")]
    in_use = bot.provider
    with pytest.raises(DocbotError, match="weights ffffffffffff, but the local SmolLM2-135M-Instruct"):
        bot.switch_to_fine_tuned_model(wrong)
    assert [v.name for v in list_versions(root / "models")] == before
    assert bot.provider is in_use  # nothing was switched


def test_the_chatbot_lists_versions_switches_and_switches_back(registry, tmp_path):
    _, root, _ = registry
    write_facts_domain(tmp_path / "Documents" / "Velmora")
    (tmp_path / "models").symlink_to(root / "models")
    typed = "\n".join(["models", "use-fine-tuned", "", QUESTION, "use-base", QUESTION, "quit"]) + "\n"
    done = subprocess.run([sys.executable, str(REPO / "rag_chat.py"), "--domain", "velmora", "--provider",
                           "transformers"], input=typed, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "DOCBOT_HISTORY": str(tmp_path / "history")}, timeout=600)
    assert done.returncode == 0, done.stderr
    out, err = done.stdout, done.stderr
    versions = [v.name for v in list_versions(root / "models", "velmora")]
    newest = versions[0]
    listed, offered = out.split("velmora> ")[1:3]
    assert all(f"{name}  base SmolLM2-135M-Instruct" in listed for name in versions)  # `models`
    assert offered.index(f"[1] {newest}") < offered.index(f"[{len(versions)}] velmora_finetuned_v1.0.0")
    assert f"model: transformers:SmolLM2-135M-Instruct+{newest}" in err
    assert f"Sources (transformers:SmolLM2-135M-Instruct+{newest}):" in out
    assert "model: transformers:SmolLM2-135M-Instruct\n" in err
    assert out.count("Sources (transformers:SmolLM2-135M-Instruct):") == 1


def test_with_ollama_a_version_is_created_on_the_server_and_answers_like_the_adapter(registry, smollm2, models_dir,
                                                                                     monkeypatch):
    """The created model answers through llama.cpp (f16 GGUF) in the test server, the in-process one through
    transformers (fp32 adapter): different engines, compared with a stated tolerance, not for equality.
    Measured on the 5 FACTS questions: 5 of 5 answers identical; asserted: at least 3 identical, mean leading
    character share >= 0.8."""
    from tests.ollama_api_server import OllamaAPIServer, packaged_model

    bot, root, (first, _, _) = registry
    bot.switch_to_fine_tuned_model(first.name)
    in_process = [str(bot.ask(question, conversation=Conversation(0))) for question, *_ in FACTS]
    bot.use_base()
    with OllamaAPIServer({"smollm2:135m": packaged_model("SmolLM2-135M-Instruct", models_dir,
                                                         smollm2.tokenizer)}) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        on_ollama = ConfigurableDocBot(config=bot.config.replace(provider="ollama", ollama_model="smollm2:135m"))
        on_ollama.load_domain(bot.domain, bot.documents_path, progress=False)
        provider = on_ollama.switch_to_fine_tuned_model(first.name)
        assert str(provider) == "ollama:docbot-velmora_finetuned_v1.0.0"
        answers = [on_ollama.ask(question, conversation=Conversation(0)) for question, *_ in FACTS]
        assert all(a.model == "ollama:docbot-velmora_finetuned_v1.0.0" for a in answers)
        assert (root / "models" / "exports" / first.name / "model.gguf").is_file()
        assert str(on_ollama.use_base()) == "ollama:smollm2:135m"
    pairs = [(str(a), b) for a, b in zip(answers, in_process)]
    shares = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))) / max(len(a), len(b), 1)
              for a, b in pairs]
    assert sum(a == b for a, b in pairs) >= 3 and sum(shares) / len(shares) >= 0.8, pairs


def test_a_merged_model_folder_answers_like_its_adapter(registry, tmp_path):
    from docbot.tuning.export import merge_adapter

    bot, root, (first, _, _) = registry
    merged = merge_adapter(str(root / "models" / "base_smollm2-135m-instruct"), str(first.path),
                           str(tmp_path / "merged"))
    bot.switch_to_fine_tuned_model(first.name)
    with_adapter = str(bot.ask(QUESTION))
    provider = bot.switch_to_fine_tuned_model(merged)
    assert provider.location == str(merged) and bot.fine_tuned is None
    assert str(bot.ask(QUESTION)) == with_adapter
    bot.use_base()
