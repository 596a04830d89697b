"""English function words: articles, pronouns, auxiliaries, prepositions and conjunctions (one shared list: the
realism corruptions drop and swap them, the content lexicon and the form siblings leave them out)."""

from __future__ import annotations

FUNCTION_WORDS = frozenset(
    "a an the i you he she it we they me him her us them my your his its our their this that these those "
    "is am are was were be been do does did have has had will would can could should may might must "
    "to of in on at for with by from about as into like than and or but if so not".split()
)
