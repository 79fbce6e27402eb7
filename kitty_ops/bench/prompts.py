"""The bench's prompts: a fixed, seeded set, so two runs ask exactly the same questions.

Prompt i of a run is a sequence of common English words drawn with `random.Random` seeded from
(seed, i): the same seed gives the same text on every machine and Python version (a string seed
is hashed with SHA-512, independent of PYTHONHASHSEED). Each request gets its own prompt, so no
two share a prefix (the requests also say `cache_prompt: false`).

Common words with a leading space are one token each in the usual tokenizers, so N words are
about N tokens; `run` asks the server's own `/tokenize` once and scales the word count when the
model's tokenizer disagrees. The prompt length is approximate by design; the figures use the
token counts the server reports (`timings.prompt_n`).
"""

from __future__ import annotations

import random

WORDS = tuple("""
the of and to in is it that for was on are as with his they at be this from have or by one had
not but what all were when we there can an your which their said if do will each about how up
out them then she many some so these would other into has more her two like him see time could
no make than first been its who now people my made over did down only way find use may water
long little very after words called just where most know get through back much before go good
new write our used me man too any day same right look think also around another came come work
three word must because does part even place well such here take why things help put years
different away again off went old number great tell men say small every found still between name
should home big give air line set own under read last never us left end along while might next
sound below saw something thought both few those always looked show large often together asked
house world going want school important until form food keep children feet land side without boy
once animals life enough took sometimes four head above kind began almost live page got earth
need far hand high year mother light parts country father let night following picture being study
second eyes soon times story boys since white days ever paper hard near sentence better best across
during today others however sure means knew try told young miles sun ways thing whole hear example
heard several change answer room sea against top turned learn point city play toward five using
himself usually money seen car morning given body family later order fish river song mountain
""".split())


def prompt(seed: int, index: int, words: int) -> str:
    """Prompt `index` of the set for `seed`: `words` words, then a line that asks for more text
    (a base model continues it; every request generates exactly n_predict tokens anyway)."""
    rng = random.Random(f"kitty-ops-bench:{seed}:{index}")
    body = " ".join(rng.choice(WORDS) for _ in range(max(1, words)))
    return f"{body.capitalize()}.\n"


def words_for(tokens: int, tokens_per_word: float = 1.0) -> int:
    """How many words make about `tokens` tokens, given what the tokenizer said of a sample
    (the one token of the beginning-of-sequence marker and the trailing line aside)."""
    return max(1, round((tokens - 2) / max(tokens_per_word, 0.1)))
