"""The chatbot driven through stdin as a user types, its transcript checked."""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

from conftest import REPO, write_corpus, write_facts_domain


def readable(fd: int, seconds: float = 0.2) -> bool:
    """poll, not select: select() refuses descriptors numbered above 1024, which a whole test session reaches."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(seconds * 1000))


@pytest.mark.slow
def test_a_session_answers_cites_switches_reports_errors_and_quits(tmp_path, models_dir):
    write_facts_domain(tmp_path / "Documents" / "Velmora")
    other = tmp_path / "elsewhere" / "Harbour"
    other.mkdir(parents=True)
    (other / "tides.md").write_text("# Tides\n\nThe Harbour tide gauge is read at 05:10 every day.\n")
    (tmp_path / "models").symlink_to(models_dir)
    typed = "\n".join([
        "help",
        "What is the maximum daily dose of Quorvane?",
        "sources",
        "fine-tune",
        "switch nowhere",
        f"switch harbour {other}",
        "domains",
        "When is the Harbour tide gauge read?",
        "quit",
    ]) + "\n"
    env = {**os.environ, "DOCBOT_HISTORY": str(tmp_path / "history"), "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, str(REPO / "rag_chat.py"), "--domain", "velmora",
                           "--provider", "transformers"], input=typed, capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err
    assert "switch [DOMAIN [PATH]]" in out  # help
    answer = out.split("velmora> ")[2]
    assert "35 mg" in answer and "[1] handbook.pdf p.2" in answer
    listing = out.split("velmora> ")[3].splitlines()  # `sources`: in rank order, each with what backs the answer
    assert listing[0].startswith("[1] handbook.pdf p.2") and "maximum daily dose of Quorvane is 35 mg" in listing[1]
    assert "generator rules:" in err and "chat_train" in out
    written = sorted(p.name for p in (tmp_path / "fine_tuning_data").iterdir())
    assert any(n.startswith("instruction_data_velmora_") for n in written) and any(n.startswith("bundle_") for n in written)
    assert (tmp_path / "fine_tuning_colab.ipynb").is_file()
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "nowhere" in error_lines[0] and "no such folder" in error_lines[0]
    assert "harbour: 1 files" in err
    assert "* harbour" in out and "  velmora" in out  # domains, current one starred
    assert "05:10" in out.split("harbour> ")[2] and "tides.md" in out.split("harbour> ")[2]
    assert "velmora: 3 files, 4 pages" in err


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["transformers", "llamacpp"])
def test_ctrl_c_stops_an_answer_or_indexing_and_returns_to_the_prompt(tmp_path, models_dir, provider):
    """In a real terminal (a pty), as a user presses Ctrl-C while the answer streams, then while a domain loads."""
    import fcntl
    import pty
    import struct
    import termios
    import time

    write_facts_domain(tmp_path / "Documents" / "Velmora")
    corpus = write_corpus(tmp_path / "corpus", files=40)
    (tmp_path / "models").symlink_to(models_dir)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the chatbot
        os.chdir(tmp_path)
        os.environ["DOCBOT_HISTORY"] = str(tmp_path / "history")
        os.execv(sys.executable, [sys.executable, str(REPO / "rag_chat.py"), "--provider", provider])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 0 x 0 terminal hides progress bars
    seen = b""

    def wait_for(token: bytes, timeout: float = 120) -> bool:
        nonlocal seen
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if readable(fd):
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    return False
            if token in seen:
                return True
        return False

    try:
        assert wait_for(b"velmora> ")
        os.write(fd, b"Explain everything about the maximum daily dose of Quorvane, food and grapefruit juice, "
                     b"in great detail, at length.\n")
        assert wait_for(b"at length.\r\n", 30)  # the terminal's echo of the question
        seen = b""
        assert wait_for(b" ", 60)  # the first words of the answer are streaming
        os.write(fd, b"\x03")
        assert wait_for(b"stopped", 30), seen
        seen = seen[seen.index(b"stopped"):]
        assert wait_for(b"velmora> ", 30)  # back at the prompt, the session goes on
        os.write(fd, b"domains\n")
        assert wait_for(b"* velmora", 30)
        os.write(fd, f"switch corpus {corpus}\n".encode())
        assert wait_for(b"Indexing corpus", 60), seen[-3000:]
        os.write(fd, b"\x03")
        assert wait_for(b"indexing interrupted", 30), seen
        assert wait_for(b"velmora> ", 30)  # still on the domain it was on
        os.write(fd, b"quit\n")
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        history = (tmp_path / "history").read_text()
        assert "at length." in history and "domains" in history and "switch corpus" in history
    finally:
        os.close(fd)


@pytest.mark.slow
def test_fine_tune_and_train_on_a_one_document_domain_say_so_in_one_line(tmp_path, models_dir):
    """A new user's first try: one text file, `fine-tune`, `train 2`. No validation split is possible (the split
    is by document), so training says so in one line, trains without validation loss and registers."""
    import pty
    import time

    domain = tmp_path / "Documents" / "Solo"
    domain.mkdir(parents=True)
    (domain / "notes.txt").write_text("The Solo clinic opens at 07:15. The head nurse of Solo is Imke Varga. "
                                      "Visitors sign in at the front desk.\n", encoding="utf-8")
    (tmp_path / "models").mkdir()  # the version registers here; only the base model is shared
    (tmp_path / "models" / "base_smollm2-135m-instruct").symlink_to(models_dir / "base_smollm2-135m-instruct")
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(tmp_path)
        os.environ.update(DOCBOT_HISTORY=str(tmp_path / "history"), DOCBOT_HOME=str(tmp_path / "home"))
        os.execv(sys.executable, [sys.executable, str(REPO / "rag_chat.py"), "--provider", "transformers"])
    seen = b""

    def until_prompt(timeout: float) -> str:
        nonlocal seen
        end = time.monotonic() + timeout
        while time.monotonic() < end and b"solo> " not in seen:
            if readable(fd):
                seen += os.read(fd, 65536)
        text, _, seen = seen.partition(b"solo> ")
        return text.decode("utf-8", "replace")

    try:
        until_prompt(180)
        os.write(fd, b"fine-tune\n")
        assert "generator rules" in until_prompt(180)
        os.write(fd, b"train 2\n")
        transcript = until_prompt(600)
        os.write(fd, b"quit\n")
        os.waitpid(pid, 0)
    finally:
        os.close(fd)
    notices = [line for line in transcript.splitlines() if "validation" in line and "registered" not in line]
    assert len(notices) == 1 and "no validation examples" in notices[0] and "without validation loss" in notices[0]
    assert "training a LoRA adapter on SmolLM2-135M-Instruct (BASE_MODEL)" in transcript  # the settings' base
    assert "registered solo_finetuned_v1.0.0" in transcript
    assert "Traceback" not in transcript and "error:" not in transcript
    assert not (tmp_path / "home" / "errors.log").exists()


def test_an_unexpected_error_is_one_line_with_its_traceback_logged(tmp_path, monkeypatch):
    """Corrupt registry JSON is a known case (one line naming the file); anything else still becomes one line,
    with the traceback in $DOCBOT_HOME/errors.log, and the session goes on."""
    import io

    from docbot import ConfigurableDocBot
    from docbot.repl import Repl

    monkeypatch.setenv("DOCBOT_HOME", str(tmp_path / "home"))
    broken = tmp_path / "models" / "velmora_finetuned_v1.0.0"
    broken.mkdir(parents=True)
    (broken / "docbot_model.json").write_text('{"version": [1, 0', encoding="utf-8")
    bot = ConfigurableDocBot(models_dir=str(tmp_path / "models"), index_dir=str(tmp_path / "index"),
                             documents_dir=str(tmp_path / "Documents"))
    out, err = io.StringIO(), io.StringIO()
    repl = Repl(bot, out, err)
    monkeypatch.setattr("sys.stdin", io.StringIO("models\nswitch\nfine-tune\nhelp\n"))
    bot.domains = lambda: 1 / 0  # a defect anywhere below the REPL, as a user would meet it
    assert repl.run() == 0
    lines = err.getvalue().splitlines()
    assert lines[0] == (f"error: {broken / 'docbot_model.json'}:1: damaged JSON (Expecting ',' delimiter); restore "
                        f"it from a backup, or move {broken.name} out of {tmp_path / 'models'} to drop that version")
    assert lines[1].startswith("error: unexpected ZeroDivisionError while running `switch`: division by zero "
                               f"(traceback in {tmp_path / 'home' / 'errors.log'})")
    assert lines[2] == "error: no domain loaded; call bot.load_domain(name, path) (in the chatbot: switch NAME)"
    assert len(lines) == 3 and "Traceback" not in err.getvalue() and "switch [DOMAIN [PATH]]" in out.getvalue()
    logged = (tmp_path / "home" / "errors.log").read_text()
    assert "while running `switch`" in logged and "ZeroDivisionError" in logged and "Traceback" in logged
