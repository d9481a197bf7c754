"""Context that answers: each retrieved block trimmed to its sentences that bear on the question.

On a CPU the prompt's tokens are what cost time before the first word (prefill), so a block is cut down to the
sentences that share most words with the question, kept in their order, within a character budget. The answer
prompt and the training prompts trim alike (`datasets.to_row` calls the same function), so a fine-tuned model sees
at training time what it sees when it answers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from .evidence import split_sentences

__all__ = ["trim_block", "trim_blocks"]

_WORD = re.compile(r"[a-z0-9]+")
_IGNORED = frozenset("a an the and or but of to in on at for by with from as is are was were be it its this that "
                     "what which who whom when where why how do does did can must should may will".split())


def trim_block(question: str, text: str, budget: int) -> str:
    """`text` cut to its sentences that share most words with `question`, in their order, in at most `budget`
    characters (at least the best sentence); the whole text when it fits or `budget` is 0. A word that occurs
    twice in `question` weighs twice (a follow-up's own words are given twice: see `answers`)."""
    if budget <= 0 or len(text) <= budget:
        return text
    wanted = Counter(w for w in _WORD.findall(question.lower()) if w not in _IGNORED)
    sentences = split_sentences(text)
    score = [sum(wanted[w] for w in set(_WORD.findall(s.lower()))) for s in sentences]
    kept, used = set(), 0
    for i in sorted(range(len(sentences)), key=lambda i: (-score[i], i)):
        if score[i] == 0 and kept:
            break
        if used + len(sentences[i]) > budget and kept:
            continue
        kept.add(i)
        used += len(sentences[i]) + 1
    return " ".join(sentences[i] for i in sorted(kept))


def trim_blocks(question: str, blocks: Sequence[tuple[str, str]], budget: int) -> list[tuple[str, str]]:
    """Each (label, text) block trimmed for `question`."""
    return [(label, trim_block(question, text, budget)) for label, text in blocks]
