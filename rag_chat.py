"""docbot's public entry point: `ConfigurableDocBot` for library use, and `python rag_chat.py` for the chatbot."""

from docbot import Answer, ConfigurableDocBot, Conversation, DocbotError, StreamingAnswer
from docbot.repl import main

__all__ = ["ConfigurableDocBot", "Answer", "StreamingAnswer", "Conversation", "DocbotError", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
