"""A conversation: the turns of one chat, and how a new question is searched in their light."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .context import Embed
from .retrieval import Source

__all__ = ["Conversation", "Turn", "leans_on_previous", "names_its_subject", "question_to_ask", "rewrite_fragment"]

# A question leans on the previous turn when it opens like a continuation ("And how often?", "What about
# children?"), or is short and points back ("What must they wear there?"), or names almost nothing ("On which days?").
# A brief question that names its own subject ("How long are children's records kept?") stands alone.
_OPENERS = r"and|but|also|or|so|then|what about|how about"  # words that open a continuation
_CONTINUES = re.compile(rf"^({_OPENERS}|same)\b", re.I)
# "there" points back as a place ("How are instruments carried there?"), not in "Is there a ...?" or "there is"
_POINTS_BACK = re.compile(r"\b(it|its|they|them|their|this|that|these|those|he|she|him|his|her|"
                          r"(?<!is )(?<!are )(?<!was )(?<!were )there(?! (?:is|are|was|were)\b))\b", re.I)
_FILLER = {"what", "which", "who", "whom", "when", "where", "why", "how", "many", "much", "long", "often", "is",
           "are", "was", "were", "do", "does", "did", "can", "must", "should", "the", "a", "an", "of", "on", "in",
           "at", "for", "to", "and", "or", "about", "with", "by", "i", "we", "you", "take", "last", "get", "need",
           "use", "happen", "mean", "cost", "have", "has", "go", "come", "say", "one", "ones"}  # name no subject
SHORT_QUESTION_WORDS = 10  # pointing back counts only in a question this short; longer ones carry their subject
# "And <fragment>?" with a fragment that stands for part of the previous question ("And for an exchange?",
# "And status amber?", "And a double one?"): the fragment is put in that part's place.
_FRAGMENT = re.compile(rf"^(?:{_OPENERS})\s+(?P<fragment>[^?]+?)\s*\??$", re.I)
_ASKS = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "is", "are", "was", "were", "do",
         "does", "did", "can", "could", "must", "should", "will", "would", "may"}  # a fragment that is a question
_PREPOSITIONS = {"for", "in", "on", "at", "with", "about", "to", "from", "by", "of", "during", "after", "before"}
_ARTICLES = {"a", "an", "the"}
_PARTICIPLES = {"kept", "given", "taken", "held", "seen", "done", "made", "worn", "told", "paid", "sent", "left",
                "run", "put", "set", "read", "found", "brought", "bought", "written", "known", "shown", "thrown",
                "chosen", "spoken", "hidden", "eaten"}  # irregular; regular ones end in -ed
_NO_SUBJECT = _FILLER | _ARTICLES | _PREPOSITIONS  # words a sibling fragment never replaces
_DO = {"do", "does", "did"}  # "When does the line open?": the verb follows the subject
MAX_FRAGMENT_WORDS = 6  # a longer continuation says more than a part of the previous question
SWAP_SIMILARITY = 0.5  # MiniLM cosine from which a fragment stands for a run of the previous question's words:
# siblings (two days of the week, children and adults) reach it, unrelated runs stay below


@dataclass(frozen=True)
class Turn:
    """One question, the answer given, the sources it cited, and the user message it was answered from (None for
    a decline or an answer without blocks)."""

    question: str
    answer: str
    sources: tuple[Source, ...] = ()
    prompt: str | None = None


class Conversation:
    """The last `max_turns` turns of one chat. `bot.conversation` is the default one; pass another to `ask` to
    keep several chats apart."""

    def __init__(self, max_turns: int = 2) -> None:
        self._turns: deque[Turn] = deque(maxlen=max_turns)

    @property
    def turns(self) -> list[Turn]:
        """The kept turns, oldest first."""
        return list(self._turns)

    def add(self, question: str, answer: str, sources: Sequence[Source] = (), prompt: str | None = None) -> None:
        """Record a complete answer (an interrupted one never joins the conversation)."""
        self._turns.append(Turn(question, answer, tuple(sources), prompt))

    def exchange_before(self, question: str) -> tuple[str, str] | None:
        """The user message and answer of the last turn when `question` leans on it and it was answered from
        blocks: the model reads a follow-up after them (`prompts.build_messages`)."""
        if not self._turns or self._turns[-1].prompt is None or not leans_on_previous(question):
            return None
        return self._turns[-1].prompt, self._turns[-1].answer

    def clear(self) -> None:
        """Forget every turn: the next question is read on its own."""
        self._turns.clear()

    def readings(self, question: str, embed: Embed | None = None) -> list[str]:
        """The ways the question stands alone, for the search, the likeliest first: a follow-up reads as a fragment
        put into the previous question (`rewrite_fragment`), if it is one, then as the previous question with it
        glued on; any other question reads as itself. The answer path takes the first reading that finds a
        relevant block, so the documents decide whether a fragment takes the place of part of the previous
        question or, when no block speaks to that reading, is glued to it."""
        if not self._turns or not leans_on_previous(question):
            return [question]
        previous = self._turns[-1].question
        glued = f"{previous} {question}"
        return [r for r in (rewrite_fragment(previous, question, embed), glued) if r]

    def __len__(self) -> int:
        return len(self._turns)


def names_its_subject(question: str) -> bool:
    """Whether `question` names at least two things of its own ("and how often must passwords be changed?"): such
    a follow-up is searched with the turn before but asked on its own, or the model answers the earlier one."""
    return sum(w not in _FILLER for w in re.findall(r"[\w'-]+", question.lower())) >= 2


def leans_on_previous(question: str) -> bool:
    """Whether `question` can only be understood with the turn before it."""
    words = re.findall(r"[\w'-]+", question.lower())
    if _CONTINUES.match(question.strip()):
        return True
    if len(words) <= SHORT_QUESTION_WORDS and _POINTS_BACK.search(question):
        return True
    return not names_its_subject(question)


def question_to_ask(question: str, standalone: str) -> tuple[str, str]:
    """What the model is asked and what the context is selected by, given `standalone`, the reading of `question`
    that was searched (`Conversation.readings`). A follow-up glued to the previous question is asked on its own
    when it names its subject ("and how often must passwords be changed?"), or the model answers the earlier
    question, and its own words weigh twice in the selection; a rewritten fragment, or any other question, is
    used as it stands."""
    if standalone != question and standalone.endswith(f" {question}"):
        return question if names_its_subject(question) else standalone, f"{question} {standalone}"
    return standalone, standalone


def rewrite_fragment(previous: str, question: str, embed: Embed | None = None) -> str | None:
    """`previous` with the fragment of an "And <fragment>?" follow-up in the place of the part it replaces, or None
    when there is no such part. Four forms: a phrase opening with a preposition replaces the previous question
    from its last use of that preposition ("Which form is used for a refund?" + "And for an exchange?" ->
    "Which form is used for an exchange?"); a phrase opening with a word of the previous question replaces as
    many words from there ("What does status red mean?" + "And status amber?" -> "What does status amber mean?");
    a phrase opening with an article replaces the previous question's phrase opening with one that shares its
    words, else the last such phrase, "one" standing for that phrase's last word ("How long is a standard
    appointment?" + "And a double one?" -> "How long is a double appointment?"); any other phrase, or a single
    word, replaces the run of words nearest to it in meaning, given `embed` (`_swap_nearest`)."""
    match = _FRAGMENT.match(question.strip())
    if not match:
        return None
    fragment = match.group("fragment").split()
    first = fragment[0].lower()
    if first in _ASKS or len(fragment) > MAX_FRAGMENT_WORDS:
        return None
    words = previous.strip().rstrip("?.! ").split()
    lower = [w.lower() for w in words]
    if len(fragment) == 1 or (first not in _PREPOSITIONS | _ARTICLES and first not in lower):
        return _swap_nearest(words, fragment, embed) if embed is not None else None
    if first in _PREPOSITIONS:
        if first not in lower:
            return None
        start = len(lower) - 1 - lower[::-1].index(first)
        return " ".join(words[:start] + fragment) + "?"
    if first in _ARTICLES:
        phrases = [_phrase(lower, i) for i, w in enumerate(lower) if w in _ARTICLES]
        if not phrases:
            return None
        # the phrase that shares a word with the fragment ("the early shift" for "the late shift"), else the last
        shared = {w.lower() for w in fragment[1:]}
        start, end = max(phrases, key=lambda p: (len(shared & set(lower[p[0] + 1:p[1]])), p[0]))
        head = words[end - 1]
        heads = {"one": head, "ones": head if head.lower().endswith("s") else head + "s"}
        fragment = [heads.get(w.lower(), w) for w in fragment]
        return " ".join(words[:start] + fragment + words[end:]) + "?"
    start = lower.index(first)
    return " ".join(words[:start] + fragment + words[start + len(fragment):]) + "?"


def _swap_nearest(words: list[str], fragment: list[str], embed: Embed) -> str | None:
    """`words` with the run of its subject words nearest in meaning to `fragment` replaced by it ("When is the
    clinic open on Saturdays?" + "What about Sundays?" -> "... on Sundays?"), or None when no run is near."""
    spans = [(i, j) for i in range(len(words)) for j in range(i + 1, min(i + 3, len(words)) + 1)
             if all(w.lower() not in _NO_SUBJECT for w in words[i:j])]
    if not spans:
        return None
    vectors = embed([" ".join(fragment)] + [" ".join(words[i:j]) for i, j in spans])
    similarity = vectors[1:] @ vectors[0]
    best = int(similarity.argmax())
    if similarity[best] < SWAP_SIMILARITY:
        return None
    i, j = spans[best]
    return " ".join(words[:i] + fragment + words[j:]) + "?"


def _phrase(lower: list[str], start: int) -> tuple[int, int]:
    """The [start, end) of the phrase that opens with the article at `start`: up to the next preposition or the
    end of the question, less a closing verb: a participle ("Where is the cabinet kept?") or, for the subject of
    a "do" question, its verb ("When does the clinic close on Fridays?")."""
    end = next((i for i in range(start + 1, len(lower)) if lower[i] in _PREPOSITIONS), len(lower))
    if end - start > 2 and (_participle(lower[end - 1]) or (start > 0 and lower[start - 1] in _DO)):
        end -= 1
    return start, end


def _participle(word: str) -> bool:
    return word in _PARTICIPLES or (len(word) > 4 and word.endswith("ed"))
