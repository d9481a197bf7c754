"""The chatbot behind `python rag_chat.py`: streamed answers with citations, and a few commands.

Answers go to stdout; progress, status and errors go to stderr. Errors are one line and the session goes on.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
from pathlib import Path

from .bot import ConfigurableDocBot
from .config import settings_file
from .errors import DocbotError
from .providers import PACKAGED_MODELS, PROVIDER_CHOICES
from .rag.answers import Retraction
from .rag.evidence import check_answer, highlight

__all__ = ["main"]

HELP = """\
Ask a question about the current domain's documents, or type a command:
  help                      this list
  switch [DOMAIN [PATH]]    change domain (or add one from PATH); bare: list domains
  domains                   list domains
  sources                   the last answer's sources, each with the sentences that back it
  model [PROVIDER] [MODEL]  show the model, or change it (provider: {providers})
  reindex [DOMAIN [PATH]]   re-embed every file of a domain (the current one by default)
  fine-tune                 write training data and the Colab notebook from the current domain
  train [STEPS]             train a LoRA adapter here on the newest data (STEPS caps the optimizer steps)
  models                    list fine-tuned versions (newest first)
  use-fine-tuned [VERSION|PATH]  answer with a fine-tuned model (bare: choose among this domain's versions)
  use-base                  answer with the base model again
  evaluate [FILE]           base vs fine-tuned, with and without retrieval, on held-out questions
                            (or FILE: JSONL of question/answer pairs); writes evaluations/<stamp>/
  reset                     forget the conversation so far (follow-up questions use the last turns)
  quit, exit                leave (Ctrl-D too); Ctrl-C stops an answer"""

_ESCAPES = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?|\x1b."
                      r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """Strip terminal escape sequences and control characters (C1 too: U+009B is a one-character escape to some
    terminals): documents and models must not drive the terminal."""
    return _ESCAPES.sub("", text)


class CleanFormatter(logging.Formatter):
    """Log lines cleaned like answers: a skipped file's name is a document's words too."""

    def format(self, record: logging.LogRecord) -> str:
        return clean(super().format(record))


def print_error(text: str, err=sys.stderr) -> None:
    """One line, red on a terminal."""
    line = f"error: {clean(text)}"
    print(f"\033[31m{line}\033[0m" if err.isatty() else line, file=err, flush=True)


def error_log() -> Path:
    """Where unexpected errors' tracebacks go: `$DOCBOT_HOME/errors.log`, else `~/.cache/docbot/errors.log`."""
    home = os.environ.get("DOCBOT_HOME")
    return Path(home) / "errors.log" if home else Path.home() / ".cache" / "docbot" / "errors.log"


def describe_failure(exc: BaseException, doing: str) -> str:
    """One line for any error: a DocbotError's own message; anything else named, with its traceback logged."""
    if isinstance(exc, DocbotError):
        return str(exc)
    import time
    import traceback

    path = error_log()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} while {doing}\n")
            fh.write("".join(traceback.format_exception(exc)))
        where = f"traceback in {path}"
    except OSError as log_exc:
        where = f"and the traceback could not be logged to {path}: {log_exc.strerror or log_exc}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"unexpected {type(exc).__name__} while {doing}{f': {first}' if first else ''} ({where})"


class Repl:
    """One chat session over a bot; each command is a method named `cmd_<name>`."""

    def __init__(self, bot: ConfigurableDocBot, out=sys.stdout, err=sys.stderr) -> None:
        self.bot, self.out, self.err = bot, out, err

    def say(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def error(self, text: str) -> None:
        print_error(text, self.err)

    def run(self) -> int:
        while True:
            try:
                line = input(f"{self.bot.domain or 'docbot'}> ").strip()
            except EOFError:
                print(file=self.out)
                return 0
            except KeyboardInterrupt:
                print(file=self.out)
                continue
            if not line:
                continue
            word, _, rest = line.partition(" ")
            if word.lower() in ("quit", "exit"):
                return 0
            handler = getattr(self, f"cmd_{word.lower().replace('-', '_')}", None)
            try:
                if handler is not None:
                    handler(rest.strip())
                else:
                    self.answer(line)
            except KeyboardInterrupt:
                print(file=self.out)
                self.say("interrupted")
            except Exception as exc:  # the contract: one line, never a traceback, and the session goes on
                self.error(describe_failure(exc, f"running `{word}`" if handler else "answering"))

    def answer(self, question: str) -> None:
        answer = self.bot.ask(question, stream=True)
        try:
            for piece in answer:
                if isinstance(piece, Retraction):  # the text shown stays, marked as withdrawn
                    self.out.write(f"\n  [withdrawn: {piece.reason}]\n")
                self.out.write(clean(piece))
                self.out.flush()
        except KeyboardInterrupt:
            answer.close()
            print(file=self.out)
            self.say("stopped")
            return
        except Exception:
            print(file=self.out)  # end the partial answer's line; the error follows on its own
            raise
        print(file=self.out)
        evidence = answer.evidence
        if evidence is not None and evidence.sentences:
            if not evidence.supported:
                print("Not found in the cited blocks; the closest they come:", file=self.out)
            else:
                print("Evidence:", file=self.out)
            for sentence in evidence.sentences:
                text = clean(sentence)
                print(f"  > {highlight(text, evidence.keywords) if self.out.isatty() else text}", file=self.out)
        elif evidence is not None and not evidence.supported:
            print("Not found in the cited blocks.", file=self.out)
        if answer.sources:
            print(f"Sources ({answer.model}):", file=self.out)
            for n, src in enumerate(answer.sources, start=1):
                print(f"  [{n}] {clean(str(src))}  (similarity {src.score:.2f})", file=self.out)
        self.out.flush()

    def cmd_help(self, _: str) -> None:
        print(HELP.format(providers=", ".join(PROVIDER_CHOICES)), file=self.out)

    def cmd_switch(self, args: str) -> None:
        parts = shlex.split(args)
        if not parts:
            return self.cmd_domains("")
        self.load(parts[0], parts[1] if len(parts) > 1 else None)

    def cmd_domains(self, _: str) -> None:
        for name in self.bot.domains():
            print(f"{'*' if name == self.bot.domain else ' '} {name}", file=self.out)

    def cmd_sources(self, _: str) -> None:
        last = self.bot.last_answer
        if last is None or not last.sources:
            return self.say("no sources yet: ask a question about the documents first")
        for n, src in enumerate(last.sources, start=1):  # in rank order, each with what in it backs the answer
            print(f"[{n}] {clean(str(src))}  (similarity {src.score:.2f}, chunk {src.chunk_id})", file=self.out)
            backing = check_answer(last.text, [(str(src), src.text)]).sentences
            for sentence in backing or ["(no sentence of it holds the answer's words)"]:
                print(f"    {clean(sentence)}", file=self.out)

    def cmd_model(self, args: str) -> None:
        parts = shlex.split(args)
        if parts:
            provider = parts[0] if parts[0] in PROVIDER_CHOICES else None
            model = parts[1] if provider and len(parts) > 1 else (None if provider else parts[0])
            self.say("loading model ...")
            self.bot.set_model(provider, model)
        print(f"model: {self.bot.provider}", file=self.out)

    def cmd_reindex(self, rest: str) -> None:
        self.say(str(self.bot.reindex(*rest.split(maxsplit=1))))

    def cmd_fine_tune(self, _: str) -> None:
        import json

        files = self.bot.prepare_fine_tuning_data()
        card = json.loads(Path(files["card"]).read_text(encoding="utf-8"))
        kept = ", ".join(f"{n} from {g}" for g, n in card["generator"]["kept"].items())
        dropped = "".join(f", {n} dropped: {why}" for why, n in card["generator"]["dropped"].items())
        counts = ", ".join(f"{fmt} {c['train']} train / {c['validation']} validation"
                           for fmt, c in card["counts"].items())
        declines = sum(card["decline_examples"].values())
        self.say(f"generator {card['generator']['requested']}: {kept}{dropped}; {counts} (with {declines} that "
                 f"teach declining)")
        for role, path in files.items():
            print(f"  {role:<22} {path}", file=self.out)

    def cmd_train(self, args: str) -> None:
        steps = args.strip()
        if steps and not steps.isdigit():
            raise DocbotError(f"train takes a number of steps, got {steps!r}")
        base = self.bot.config.base_model
        served = self.bot.provider.name == "ollama"  # a server's model has no weights here to train
        self.say(f"training a LoRA adapter on {base} (BASE_MODEL)"
                 + (f", not on {self.bot.provider}: Ollama's models cannot be trained here" if served else ""))
        version = self.bot.train(max_steps=int(steps) if steps else -1)
        self.say(f"registered {version.describe()}")

    def cmd_models(self, _: str) -> None:
        versions = self.bot.fine_tuned_versions(all_domains=True)
        if not versions:
            return self.say("no fine-tuned versions yet: `fine-tune`, then `train` (or import the notebook's zip "
                            "with `use-fine-tuned PATH`)")
        for v in versions:
            current = self.bot.fine_tuned is not None and self.bot.fine_tuned.path == v.path
            print(f"{'*' if current else ' '} {v.describe()}", file=self.out)

    def cmd_use_fine_tuned(self, args: str) -> None:
        choice = args.strip() or None
        if choice is None:
            versions = self.bot.fine_tuned_versions()
            if not versions:
                raise DocbotError(f"no fine-tuned versions of '{self.bot.domain}'; `train` one, or pass a path")
            for n, v in enumerate(versions, start=1):
                print(f"  [{n}] {v.describe()}", file=self.out)
            picked = input(f"version [1-{len(versions)}, Enter for 1]: ").strip() or "1"
            if not picked.isdigit() or not 1 <= int(picked) <= len(versions):
                raise DocbotError(f"no version {picked!r}; nothing switched")
            choice = str(versions[int(picked) - 1].path)
        self.say("loading fine-tuned model ...")
        self.say(f"model: {self.bot.switch_to_fine_tuned_model(choice)}")

    def cmd_use_base(self, _: str) -> None:
        self.say(f"model: {self.bot.use_base()}")

    def cmd_evaluate(self, args: str) -> None:
        parts = shlex.split(args)
        if len(parts) > 1:
            raise DocbotError(f"evaluate takes at most one question file, got {len(parts)} arguments")
        self.say("evaluating: four arms (base and fine-tuned, with and without retrieval) ...")
        report = self.bot.evaluate(parts[0] if parts else None)
        print(clean(report.table()), file=self.out)

    def cmd_reset(self, _: str) -> None:
        self.bot.reset()
        self.say("conversation cleared")

    def load(self, domain: str, path: str | None) -> None:
        try:
            report = self.bot.load_domain(domain, path)
        except KeyboardInterrupt:
            self.say("indexing interrupted; the files finished so far are kept, load again to finish")
            return
        self.say(str(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rag_chat.py", description="Ask questions about your documents.")
    parser.add_argument("--domain", help="domain to start with (a folder name under the documents folder)")
    parser.add_argument("--docs", help="folder of the domain's documents (default: Documents/<DOMAIN>)")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, help="model provider")
    parser.add_argument("--model", help=f"a packaged model ({', '.join(PACKAGED_MODELS)}), a .gguf file "
                        f"(llamacpp), a model folder or hub id (transformers), or a model name (ollama)")
    args = parser.parse_args(argv)
    _setup_logging()
    history = _setup_readline()
    try:
        settings = settings_file()
        print(f"settings: {settings.resolve() if settings else 'package defaults (no fine_tuning_config.py found)'}",
              file=sys.stderr, flush=True)
        bot = ConfigurableDocBot(provider=args.provider, model=args.model)
        repl = Repl(bot)
        domain = args.domain or _default_domain(bot)
        repl.load(domain, args.docs)
        repl.say("loading model ...")
        repl.say(f"model: {bot.provider}. Type a question, or `help`.")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a start that fails is one line too
        print_error(describe_failure(exc, "starting"))
        return 1
    try:
        return repl.run()
    finally:
        if history:
            _save_history(history)


def _default_domain(bot: ConfigurableDocBot) -> str:
    domains = bot.domains()
    if not domains:
        raise DocbotError(f"no domains: put documents in {bot.config.documents_dir}/<Domain>/ or pass --docs")
    return "medical" if "medical" in domains else domains[0]


def _setup_logging() -> None:
    """docbot's warnings (skipped files) as plain lines; no per-load progress bars from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CleanFormatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("docbot")
    logger.addHandler(handler)
    logger.propagate = False


def _setup_readline() -> Path | None:
    """Keep input history across sessions in ~/.docbot_history (or $DOCBOT_HISTORY)."""
    try:
        import readline
    except ImportError:
        return None
    path = Path(os.environ.get("DOCBOT_HISTORY", Path.home() / ".docbot_history"))
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)
    return path


def _save_history(path: Path) -> None:
    import readline

    try:
        readline.write_history_file(path)
    except OSError:
        pass
