"""Does the model know any word of an expression? Refuse what it cannot read instead of guessing.

The text encoders (all-MiniLM-L6-v2, BERT-base) read English through a WordPiece vocabulary. Text
in another language or in emoji still becomes tokens ("das Wasser" -> ``das was ##ser``, an emoji
-> ``[UNK]``) and the model still returns a mask, which looks like an answer and is not. A
:class:`Lexicon` says whether an expression holds at least one English word the model can read:

* a *known* word is a whole-word, ASCII entry of the tokenizer's vocabulary (English words; the
  word pieces ``##ser`` and the vocabulary's CJK characters do not count), or a word of the
  wordings the shipped model was trained on ("the greenery", "the rooftops": split into pieces by
  the vocabulary, but learned as they are), also with a plural "s";
* the vocabulary also holds frequent function words of other languages ("das", "der", "la",
  "el", "het"): :data:`FOREIGN_FUNCTION_WORDS` are never known, so they cannot vouch for a
  sentence;
* English function words ("the", "all", "in") are neither: an expression needs a known *content*
  word.

An expression with no letter at all, or whose content words are all unknown, is refused with
:class:`NotUnderstoodError` (a ``ValueError``: every caller that reports bad input reports it).
A typo in the only content word ("the watr") is refused too: the message names the words. Words
the vocabulary holds in both languages ("la mer": "mer" is a whole-word entry) are let through;
the model then answers as it can.

What a checkpoint was *taught* is narrower than what it can read: :func:`taught_classes` gives
its land-cover classes and their wordings (its metadata's ``taught``, else its training data's
categories looked up in the converters' wording tables); :func:`untaught_subject` finds an
expression none of whose content words the model was taught ("the ships": the app says "this
model was not trained on ships" rather than only "nothing found"); the "not understood" refusal
names taught wordings as examples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sbanet.data.expressions import EXTREMES, HALVES, POSITION_VARIANTS
from sbanet.data.wording import DUBAI_PARAPHRASES, GID_PARAPHRASES

# frequent function words of German, French, Spanish, Italian, Portuguese and Dutch that are whole
# words in the (English) vocabulary but not English words
_FOREIGN = (
    "der die das den dem des ein eine einer einem einen und oder mit von vom zum zur auf im am ist "
    "le la les un une du des et au aux sur dans avec est "
    "el los las unos unas del al y en con por para es "
    "il lo gli uno della delle degli nel nella sul sulla di da con e "
    "o os as um uma do da dos das no na nos nas em com "
    "het een van en op bij"
)
FOREIGN_FUNCTION_WORDS = frozenset(_FOREIGN.split())
# English words that carry no content of their own in a referring expression
_ENGLISH = (
    "a an the all every each any some this that these those of in on at to from by with near next "
    "and or but is are be it its one ones please show me find mark select segment"
)
ENGLISH_FUNCTION_WORDS = frozenset(_ENGLISH.split())
_WORDS = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
DEFAULT_EXAMPLES = ("the water", "all buildings")
# words of instance-level phrases (sbanet.data.semantic's nouns and size words): taught with the classes
_INSTANCE = "body bodies patch patches complex complexes area areas largest smallest biggest big small large long"


def converter_phrases(classes: bool = True) -> list[str]:
    """The phrases the land-cover converters write: class paraphrases (dubai-aerial, GID-MTL;
    ``classes=False``: left out), positions, extremes, halves."""
    tables = (DUBAI_PARAPHRASES, GID_PARAPHRASES) if classes else ()
    phrases = [p for table in tables for wordings in table.values() for p in wordings]
    phrases += [p for wordings in POSITION_VARIANTS.values() for p in wordings]
    return phrases + list(EXTREMES) + list(HALVES)


class NotUnderstoodError(ValueError):
    """An expression with no word the model can read (another language, emoji, symbols)."""


def words_of(text: str) -> list[str]:
    """The lower-case words (runs of letters) of ``text``."""
    return [w.lower() for w in _WORDS.findall(text)]


def taught_classes(metadata: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """``{class: wordings}`` a checkpoint was trained on, canonical wording first: its metadata's
    ``taught`` (written by ``recipes.default_model.train``), else the categories of its training data
    (``data.categories`` and those of ``data.conversions``) in :data:`DUBAI_PARAPHRASES` /
    :data:`GID_PARAPHRASES`; ``{}`` when the metadata does not say (nothing is then "untaught")."""
    metadata = metadata or {}
    taught = metadata.get("taught")
    if isinstance(taught, Mapping):
        return {str(k): tuple(str(w) for w in v) for k, v in taught.items()}
    data = metadata.get("data") or {}
    # (category, its source's wording table): a GID conversion's folder is named gid-...
    named = [(c, DUBAI_PARAPHRASES) for c in data.get("categories") or {}]
    for root, conversion in (data.get("conversions") or {}).items():
        table = GID_PARAPHRASES if "gid" in str(root).lower() else DUBAI_PARAPHRASES
        named += [(c, table) for c in conversion.get("categories") or {}]
    result: dict[str, tuple[str, ...]] = {}
    for category, table in named:
        wordings = (*result.get(category, ()), *table.get(category, ()))
        if wordings:
            result[category] = tuple(dict.fromkeys(wordings))
    return result


def _singular(word: str) -> str:
    for suffix, replacement in (("ies", "y"), ("es", ""), ("s", "")):
        if len(word) > 3 and word.endswith(suffix):
            return word[: -len(suffix)] + replacement
    return word


def untaught_subject(expression: str, taught: Mapping[str, Iterable[str]]) -> str | None:
    """The content words of ``expression`` ("ships") when none of them is a word of the ``taught``
    wordings, of the converters' position phrases or of their instance nouns; None when one is
    (or ``taught`` is empty: unknown). Singular and plural count alike."""
    if not taught:
        return None
    vocabulary = {w for wordings in taught.values() for phrase in wordings for w in words_of(phrase)}
    vocabulary |= {w for phrase in converter_phrases(classes=False) for w in words_of(phrase)}
    vocabulary |= set(_INSTANCE.split())
    vocabulary = {_singular(w) for w in vocabulary} | vocabulary
    content = [w for w in words_of(expression) if w not in ENGLISH_FUNCTION_WORDS]
    if not content or any(w in vocabulary or _singular(w) in vocabulary for w in content):
        return None
    return " ".join(content)


def not_taught_message(subject: str, taught: Mapping[str, Iterable[str]], examples: int = 6) -> str:
    """ "this model was not trained on ships; it knows the water, all buildings, ..."."""
    known = [next(iter(wordings), name) for name, wordings in taught.items()][:examples]
    return f"this model was not trained on {subject}; it knows " + ", ".join(f"'{k}'" for k in known)


@dataclass(frozen=True)
class Lexicon:
    """The words a model can read (see the module docstring); ``examples``: wordings the
    "not understood" refusal suggests (the model's taught classes, when known)."""

    known: frozenset[str]
    examples: tuple[str, ...] = DEFAULT_EXAMPLES

    @classmethod
    def for_model(cls, tokenizer: Any, taught: Mapping[str, Iterable[str]] | None = None) -> Lexicon | None:
        """:meth:`from_tokenizer` with the wordings of the land-cover conversions the default
        models learned ("the greenery", "the leftmost building"); ``taught``
        (:func:`taught_classes`) gives the refusal's examples."""
        lexicon = cls.from_tokenizer(tokenizer, converter_phrases())
        if lexicon is None or not taught:
            return lexicon
        examples = tuple(next(iter(w), name) for name, w in taught.items())[:6]
        return cls(lexicon.known, examples)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, extra_words: Iterable[str] = ()) -> Lexicon | None:
        """The whole-word ASCII entries of ``tokenizer``'s vocabulary plus the words of
        ``extra_words`` (phrases); None when the tokenizer has no vocabulary to read."""
        get_vocab = getattr(tokenizer, "get_vocab", None)
        if get_vocab is None:
            return None
        vocab = (token for token in get_vocab() if token.isascii() and token.isalpha())
        extra = (word for phrase in extra_words for word in words_of(phrase))
        return cls(frozenset({*(t.lower() for t in vocab), *extra}) - FOREIGN_FUNCTION_WORDS)

    def knows(self, word: str) -> bool:
        """Whether ``word`` (lower case) is a known content word, also as a plural in "s"."""
        if word in FOREIGN_FUNCTION_WORDS:
            return False
        return word in self.known or (len(word) > 3 and word.endswith("s") and word[:-1] in self.known)

    def unknown_words(self, expression: str) -> list[str]:
        """The content words of ``expression`` the model cannot read."""
        return [w for w in words_of(expression) if w not in ENGLISH_FUNCTION_WORDS and not self.knows(w)]

    def check(self, expression: str) -> str:
        """``expression`` unchanged, or :class:`NotUnderstoodError` when it has no letters or
        none of its content words is known."""
        words = words_of(expression)
        if not words:
            raise NotUnderstoodError(
                f"{expression!r} has no words: the model understands English descriptions, e.g. {self._examples()}"
            )
        content = [w for w in words if w not in ENGLISH_FUNCTION_WORDS]
        if content and not any(self.knows(w) for w in content):
            unknown = ", ".join(repr(w) for w in dict.fromkeys(content))
            raise NotUnderstoodError(
                f"the model understands English descriptions and knows no word of {expression!r} "
                f"({unknown}); describe the object in English, e.g. {self._examples()}"
            )
        return expression

    def _examples(self) -> str:
        return ", ".join(f"'{e}'" for e in self.examples[:4])
