"""docbot's public entry point: `ConfigurableDocBot` for library use, and `python rag_chat.py` for the chatbot."""

from docbot.answers import Answer, StreamingAnswer
from docbot.bot import ConfigurableDocBot
from docbot.errors import DocbotError
from docbot.repl import main

__all__ = ["ConfigurableDocBot", "Answer", "StreamingAnswer", "DocbotError", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
