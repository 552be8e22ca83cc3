"""Text normalisation applied before scoring.

- English ASR: Whisper's ``EnglishTextNormalizer`` (the copy in ``transformers``): lowercase,
  drop ``[...]``/``(...)``/``<...>`` spans and fillers (uh, um, hmm...), expand contractions and
  titles, spell numbers as digits ("twenty five" -> "25"), unify British/American spelling,
  remove punctuation and collapse whitespace. The spelling map is the ``normalizer.json`` that
  ships with every Whisper checkpoint directory; without it spellings are left as they are.
- Other Latin-script ASR: Whisper's ``BasicTextNormalizer`` (lowercase, no brackets, no symbols).
- Chinese CER: NFKC (full-width -> half-width), lowercase, drop whitespace, punctuation and symbols.
- Captions: a pure-Python take on coco-caption's PTB tokenisation (see ``ptb_tokenize``).
- Labels: lowercase, punctuation -> space, articles removed (see ``normalize_label``).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from salmonn.errors import SalmonnError

WHISPER_REPOS = ("openai/whisper-large-v2", "openai/whisper-large-v3", "openai/whisper-large")

# Tokens that coco-caption's tokenizer removes after PTB tokenisation.
_CAPTION_PUNCT = re.compile(r"[\"“”‘’`()\[\]{}!?;:]|(?<!\d)[.,]|[.,](?!\d)")
_CLITIC = re.compile(r"(?<=\w)('s|'re|'ve|'ll|'d|'m|n't)\b")
_LABEL_DROP = re.compile(r"[^\w\s]|_")
_ARTICLES = {"a", "an", "the"}
_CLITICS = {"'s", "'re", "'ve", "'ll", "'d", "'m", "n't"}
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def load_spelling_mapping(path: str | Path | None = None) -> dict[str, str]:
    """Return Whisper's British->American spelling map from ``path`` or the local HF cache, else {}."""
    if path is None:
        path = _cached_normalizer_json()
        if path is None:
            return {}
    path = Path(path)
    if path.is_dir():
        path = path / "normalizer.json"
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SalmonnError(f"{path}: cannot read the Whisper spelling map ({err}); "
                           "pass the normalizer.json of a Whisper checkpoint") from err
    if not isinstance(mapping, dict):
        raise SalmonnError(f"{path}: expected a JSON object mapping spellings, got {type(mapping).__name__}")
    return {str(k): str(v) for k, v in mapping.items()}


def _cached_normalizer_json() -> str | None:
    """Return the path of a Whisper normalizer.json already in the HF cache (no network), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for repo in WHISPER_REPOS:
        found = try_to_load_from_cache(repo, "normalizer.json")
        if isinstance(found, str):
            return found
    return None


@functools.lru_cache(maxsize=4)
def english_normalizer(spelling_json: str | None = None) -> Callable[[str], str]:
    """Return Whisper's English normaliser with the spelling map from ``spelling_json`` (or cache)."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(load_spelling_mapping(spelling_json))


@functools.lru_cache(maxsize=1)
def basic_normalizer() -> Callable[[str], str]:
    """Return Whisper's language-independent normaliser (lowercase, no brackets/symbols)."""
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize_english(text: str, spelling_json: str | None = None) -> str:
    """Normalise English text the way Whisper's evaluation does."""
    return english_normalizer(spelling_json)(text)


def normalize_basic(text: str) -> str:
    """Normalise non-English text with Whisper's basic normaliser."""
    return basic_normalizer()(text)


def normalize_chinese(text: str) -> str:
    """NFKC, lowercase and drop every whitespace, punctuation and symbol character (for CER)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c)[0] not in "PSZC")


def ptb_tokenize(text: str) -> list[str]:
    """Tokenise a caption like coco-caption: lowercase, PTB clitic split, punctuation removed.

    Approximates Stanford PTBTokenizer + coco's punctuation filter: clitics become their own tokens
    ("dog's" -> "dog 's", "don't" -> "do n't"), quotes, brackets and . , ! ? ; : are removed
    (decimal points and thousands commas inside numbers are kept), hyphenated words stay whole,
    stand-alone "-"/"--" tokens are dropped.
    """
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = _CLITIC.sub(r" \1", text)
    text = _CAPTION_PUNCT.sub(" ", text)
    tokens = []
    for tok in text.split():
        tok = tok if tok in _CLITICS else tok.strip("'-")
        if tok:
            tokens.append(tok)
    return tokens


def normalize_label(text: str) -> str:
    """Lowercase, turn punctuation/underscores into spaces, drop articles, collapse whitespace."""
    words = _LABEL_DROP.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def simple_words(text: str) -> list[str]:
    """Lowercase word tokens without punctuation (apostrophes inside words kept)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())
