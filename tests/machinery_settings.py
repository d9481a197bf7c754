"""Settings for the tests of machinery (indexing, crashes, the REPL, fine-tuning): the 135M model answers, since
those tests check what docbot does with an answer, not its quality. Tests of answer quality pass the default
model explicitly. conftest.py points $DOCBOT_CONFIG here unless it is set."""

ANSWER_MODEL = "SmolLM2-135M-Instruct"
BASE_MODEL = "SmolLM2-135M-Instruct"  # trains ~2x faster than the default
TOP_K = 1  # the 135M model answered 9/15 dev questions with one whole block, 5/15 with two
CONTEXT_CHARS = 0
