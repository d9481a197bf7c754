"""Export of a fine-tuned model: merge the LoRA adapter, convert to an f16 GGUF with llama.cpp's converter, an Ollama
TEMPLATE that Go's text/template renders exactly like the tokenizer's chat template, and `ollama create` through
the API against the local test server, whose llama.cpp then answers (within a stated tolerance) like the in-process
adapter model.

A real adapter is trained for a few steps on SmolLM2 (module fixture, ~15 s). The GGUF converter is downloaded
once into $DOCBOT_CACHE or ~/.cache/docbot (pip, ~77 MB, about a minute) and reused afterwards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import httpx
import ollama
import pytest

from docbot.errors import DocbotError, ProviderError
from docbot.tuning.export import export_gguf, export_lora_gguf, merge_adapter
from docbot.tuning.ollama_export import modelfile, ollama_create, ollama_template
from docbot.providers.ollama import OllamaProvider
from docbot.providers.transformers_local import TransformersProvider
from tests.ollama_api_server import OllamaAPIServer, go_template_renderer

NEW_TOKENS = 20
MESSAGES = [
    {"role": "system", "content": "Answer from the context only.\n\nContext: The Velmora clinic opens at 06:45."},
    {"role": "user", "content": "When does the Velmora clinic open?"},
]
MULTI_TURN = [
    {"role": "system", "content": "You answer questions about the clinic handbook.\n\nBe brief."},
    {"role": "user", "content": "Who is the chief pharmacist?"},
    {"role": "assistant", "content": "Odalys Penhallow."},
    {"role": "user", "content": "And the fire code? Quote it \"exactly\", {{ .System }} is not a variable here."},
]
NO_SYSTEM = [
    {"role": "user", "content": "What is the maximum daily dose of Quorvane?"},
    {"role": "assistant", "content": "35 mg."},
    {"role": "user", "content": "Taken with food?"},
]


CONVERSATIONS = [MESSAGES, NO_SYSTEM, MULTI_TURN, MESSAGES[1:],
                 [{"role": "user", "content": "Where is the Brindleweed vaccine stored?"}],
                 [{"role": "user", "content": "Who is the chief pharmacist?"}]]


def _leading_chars(a: str, b: str) -> float:
    """The share of characters two answers have in common from the start, of the longer answer's."""
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return same / max(len(a), len(b), 1)


def _chat_rows(n: int) -> list[str]:
    facts = [("When does the clinic open?", "At 06:45 on weekdays."),
             ("What is the fire code?", "Code Tangerine."),
             ("Who is the chief pharmacist?", "Odalys Penhallow."),
             ("What is the maximum daily dose of Quorvane?", "35 mg per day."),
             ("Where is the Brindleweed vaccine stored?", "At 3 degrees Celsius."),
             ("When does the clinic open on weekends?", "At 09:00.")]
    return [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            for q, a in (facts * 2)[:n]]


def _provider(tokenizer, lm, label: str) -> TransformersProvider:
    """A TransformersProvider around an already loaded model (here: PEFT adapter over the base)."""
    provider = TransformersProvider.__new__(TransformersProvider)
    provider.model = provider.location = label
    provider.tokenizer, provider.lm = tokenizer, lm.eval()
    return provider


def _greedy_ids(provider: TransformersProvider, messages):
    import torch

    inputs = provider.prompt_ids(messages)
    with torch.inference_mode():
        out = provider.lm.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False,
                                   pad_token_id=provider.tokenizer.pad_token_id or provider.tokenizer.eos_token_id)
    return out[0, inputs["input_ids"].shape[-1]:].tolist()


def _last_logits(lm, tokenizer, messages):
    import torch

    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    with torch.inference_mode():
        return lm(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, -1]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, smollm2_path):
    """A LoRA adapter trained for 3 steps on SmolLM2 with docbot's own training code."""
    from docbot.tuning.training import train_lora

    work = tmp_path_factory.mktemp("export_train")
    (work / "train.jsonl").write_text("\n".join(_chat_rows(6)) + "\n")
    (work / "validation.jsonl").write_text("\n".join(_chat_rows(2)) + "\n")
    fingerprint = json.loads((Path(smollm2_path) / "docbot_base_model.json").read_text())["fingerprint"]
    train_lora(work / "train.jsonl", work / "validation.jsonl", smollm2_path, work / "run",
               base_model_name="SmolLM2-135M-Instruct", base_fingerprint=fingerprint, card_sha256=None,
               learning_rate=5e-3, batch_size=2, num_epochs=1, lora_rank=8, lora_alpha=16, lora_dropout=0.0,
               lora_target_modules=["q_proj", "v_proj"], max_seq_length=128, max_steps=3, seed=0)
    return work / "run" / "adapter"


@pytest.fixture(scope="module")
def adapted(adapter_dir, smollm2_path):
    """The adapter model in process: PeftModel over the fp32 base, as docbot's providers load it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    lm = PeftModel.from_pretrained(base, str(adapter_dir))
    return _provider(AutoTokenizer.from_pretrained(adapter_dir), lm, "adapter")


@pytest.fixture(scope="module")
def merged_dir(tmp_path_factory, smollm2_path, adapter_dir):
    return merge_adapter(smollm2_path, str(adapter_dir), str(tmp_path_factory.mktemp("export") / "merged"))


@pytest.fixture(scope="module")
def gguf_file(merged_dir):
    return export_gguf(str(merged_dir), str(merged_dir.parent / "merged.f16.gguf"))


@pytest.fixture(scope="session")
def go_renderer():
    if shutil.which("go") is None:
        pytest.skip("Go is not installed (apt-get install -y golang-go): Ollama templates are checked with Go's "
                    "own text/template")
    return go_template_renderer()


# --- merge ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_merged_model_answers_like_the_adapter_model(merged_dir, adapted, smollm2):
    merged = TransformersProvider(str(merged_dir))
    assert merged.tokenizer.chat_template == adapted.tokenizer.chat_template
    assert (merged_dir / "docbot_merged.json").is_file()

    # the adapter really changes the model (so a merge that dropped it could not pass), and the merge keeps it
    base_logits = _last_logits(smollm2.lm, smollm2.tokenizer, MESSAGES)
    adapter_logits = _last_logits(adapted.lm, adapted.tokenizer, MESSAGES)
    merged_logits = _last_logits(merged.lm, merged.tokenizer, MESSAGES)
    assert (adapter_logits - base_logits).abs().max() > 1e-2
    assert (merged_logits - adapter_logits).abs().max() < 1e-3

    expected = _greedy_ids(adapted, MESSAGES)
    assert len(expected) >= 5
    assert _greedy_ids(merged, MESSAGES) == expected
    assert merged.generate(MESSAGES, NEW_TOKENS) == adapted.generate(MESSAGES, NEW_TOKENS)


def test_merge_refuses_an_existing_folder(tmp_path, smollm2_path):
    (tmp_path / "merged").mkdir()
    (tmp_path / "adapter").mkdir()
    with pytest.raises(DocbotError, match="already exists"):
        merge_adapter(smollm2_path, str(tmp_path / "adapter"), str(tmp_path / "merged"))


def test_merge_refuses_an_adapter_of_another_base(tmp_path, smollm2_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "docbot_adapter.json").write_text(json.dumps(
        {"base_model": {"name": "OtherModel-1B", "fingerprint": "0" * 64}}))
    with pytest.raises(DocbotError, match="OtherModel-1B"):
        merge_adapter(smollm2_path, str(adapter), str(tmp_path / "merged"))
    assert not (tmp_path / "merged").exists()


# --- GGUF ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gguf_loads_back_and_answers_like_the_adapter_model(gguf_file, adapted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert gguf_file.read_bytes()[:4] == b"GGUF"
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    lm = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    from_gguf = _provider(tokenizer, lm, "gguf")
    assert tokenizer.chat_template == adapted.tokenizer.chat_template  # the GGUF carries the template
    assert from_gguf.prompt_ids(MESSAGES)["input_ids"].tolist() == adapted.prompt_ids(MESSAGES)["input_ids"].tolist()
    assert _greedy_ids(from_gguf, MESSAGES) == _greedy_ids(adapted, MESSAGES)  # f16 weights: still the same


def test_gguf_export_refuses_an_existing_file(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "out.gguf").write_bytes(b"mine")
    with pytest.raises(DocbotError, match="already exists"):
        export_gguf(str(tmp_path / "model"), str(tmp_path / "out.gguf"))
    assert (tmp_path / "out.gguf").read_bytes() == b"mine"


def test_lora_export_needs_a_local_base_folder_and_never_overwrites(tmp_path, smollm2_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(DocbotError, match="not a local model folder"):
        export_lora_gguf(tmp_path / "adapter", "HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path / "lora.gguf")
    (tmp_path / "lora.gguf").write_bytes(b"mine")
    with pytest.raises(DocbotError, match="already exists"):
        export_lora_gguf(tmp_path / "adapter", smollm2_path, tmp_path / "lora.gguf")
    assert (tmp_path / "lora.gguf").read_bytes() == b"mine"


def test_converter_download_failure_says_what_to_run(tmp_path, monkeypatch):
    from docbot.tuning.export import ensure_converter

    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds nothing: what an offline machine sees
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(DocbotError, match=r"pip download --no-deps --no-binary :all: llama-cpp-python==0\.3\.36"):
        ensure_converter(tmp_path / "cache")
    assert not (tmp_path / "cache" / "llama.cpp-0.3.36").exists()
    assert not [p for p in (tmp_path / "cache").iterdir()]  # no staging folder left


def test_gguf_converter_failure_shows_its_error(tmp_path):
    from docbot.tuning.export import converter_dir, ensure_converter

    if not (converter_dir() / "convert_hf_to_gguf.py").is_file():
        pytest.skip("the converter is not downloaded yet (the slow GGUF test downloads it)")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"architectures": ["NoSuchModelForCausalLM"]}')
    with pytest.raises(DocbotError, match="converter failed") as info:
        export_gguf(str(tmp_path / "model"), str(tmp_path / "out.gguf"), llama_cpp_dir=str(ensure_converter()))
    assert "NoSuchModel" in str(info.value)
    assert not [p.name for p in tmp_path.iterdir() if "gguf" in p.name]  # no partial file left


# --- the Ollama template -------------------------------------------------------------------------------------


@pytest.mark.parametrize("messages", [MULTI_TURN, NO_SYSTEM, MESSAGES[1:]], ids=["system-multi-turn",
                                                                                 "no-system", "one-user-turn"])
def test_go_renders_the_template_like_the_chat_template(go_renderer, smollm2, messages):
    template, _ = ollama_template(smollm2.tokenizer)
    expected = smollm2.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert go_renderer.render(template, messages) == expected


def test_go_renders_the_tiny_models_template(go_renderer, tiny_model):
    """A ChatML template without a default system message (docbot's tiny test model)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    template, _ = ollama_template(tokenizer)
    for messages in (MULTI_TURN, NO_SYSTEM):
        assert go_renderer.render(template, messages) == tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)


def test_modelfile_has_template_stops_and_greedy_decoding(smollm2):
    template, stops = ollama_template(smollm2.tokenizer)
    text = modelfile("/somewhere/medical.f16.gguf", smollm2.tokenizer)
    assert text.startswith("FROM ./medical.f16.gguf\n")
    assert f'TEMPLATE """{template}"""\n' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "<|im_end|>" in stops
    assert "PARAMETER temperature 0\n" in text
    assert "You are a helpful AI assistant named SmolLM" in template  # SmolLM2's default system message


def test_a_template_that_is_not_chatml_is_refused(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                               "{{ m['content'] }}<|eot_id|>{% endfor %}"
                               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
                               "{% endif %}")
    with pytest.raises(DocbotError, match="not ChatML"):
        ollama_template(tokenizer)
    tokenizer.chat_template = tokenizer.chat_template.replace("<|start_header_id|>", "<|im_start|>")  # near miss
    with pytest.raises(DocbotError, match="not ChatML"):
        modelfile("x.gguf", tokenizer)


# --- ollama create through the API ---------------------------------------------------------------------------


@pytest.mark.slow
def test_created_ollama_model_answers_like_the_adapter_model(go_renderer, gguf_file, adapted):
    template, stops = ollama_template(adapted.tokenizer)
    with OllamaAPIServer({}) as server:
        client = ollama.Client(host=server.url)
        ollama_create(server.url, "velmora-bot:v1", str(gguf_file), template, stops)

        digest = "sha256:" + hashlib.sha256(gguf_file.read_bytes()).hexdigest()
        assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 200
        assert httpx.head(f"{server.url}/api/blobs/sha256:{'0' * 64}").status_code == 404
        assert client.show("velmora-bot:v1").template == template

        created = OllamaProvider("velmora-bot:v1", host=server.url)
        pairs = [(created.generate(messages, NEW_TOKENS), adapted.generate(messages, NEW_TOKENS))
                 for messages in CONVERSATIONS]
    # Two engines: llama.cpp on the f16 GGUF through the server, transformers with the fp32 adapter in process.
    # Measured on these 6 conversations, 20 tokens: 6 of 6 answers identical (mean leading-character share 1.0);
    # f16 rounding may still flip a close greedy choice, so asserted: at least 4 identical, mean share >= 0.8.
    assert all(ours.strip() for ours, _ in pairs)
    assert sum(ours == theirs for ours, theirs in pairs) >= 4, pairs
    assert sum(_leading_chars(ours, theirs) for ours, theirs in pairs) / len(pairs) >= 0.8, pairs


def test_blob_upload_checks_the_digest():
    with OllamaAPIServer({}) as server:
        wrong = httpx.post(f"{server.url}/api/blobs/sha256:{'0' * 64}", content=b"not these bytes")
        assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]
        good = "sha256:" + hashlib.sha256(b"these bytes").hexdigest()
        assert httpx.post(f"{server.url}/api/blobs/{good}", content=b"these bytes").status_code == 201
        assert httpx.head(f"{server.url}/api/blobs/{good}").status_code == 200


def test_create_without_the_blob_is_a_provider_error(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with OllamaAPIServer({}) as server:
        server.routes[("POST", "/api/blobs/")] = lambda req: (req.body(), req.send_empty(201))  # accepts, keeps none
        with pytest.raises(ProviderError, match="refused to create 'm1'.*upload it first"):
            ollama_create(server.url, "m1", str(gguf), "{{ .Prompt }}", [])


def test_create_without_a_server_says_to_start_one(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderError, match="ollama serve"):
        ollama_create(f"http://127.0.0.1:{port}", "m1", str(gguf), "", [], timeout=5)
