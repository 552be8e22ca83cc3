"""The words of the SALMONN-mini corpus: sentences from the fortunes packages, spoken questions with known answers
(and the held-out family no stage trains), open questions for the LLM to answer, and the training prompts."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from salmonn.errors import SalmonnError

DEFAULT_FORTUNES_DIR = "/usr/share/games/fortunes"
FORTUNES_HINT = "install them with: apt-get install fortunes fortunes-min"


# Files of the fortunes packages that are not plain prose, or too often offensive.
_FORTUNE_SKIP = frozenset({
    "art", "ascii-art", "translate-me", "perl", "ethnic", "men-women", "drugs", "politics",
    "linuxcookie", "debian", "knghtbrd", "zippy", "computers", "linux",
})
_WORD = re.compile(r"^[A-Za-z]+(?:'[A-Za-z]+)?$")
# words of one or two letters that are real words (drops fragments like "ot", initials, units)
_SHORT_WORDS = frozenset("a i am an as at be by do go he if in is it me my no of oh on or so to up us we ok".split())


def held_out(key: str, percent: int = 20) -> bool:
    """Fixed, seed-independent membership of a sentence / item in the held-out pool."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 100 < percent


def load_sentences(fortunes_dir: str | os.PathLike = DEFAULT_FORTUNES_DIR) -> list[str]:
    """Clean sentences of 4-14 words (ASCII letters, apostrophes inside words) from fortune files.

    Returned lower case, without punctuation, sorted, deduplicated. Skips the ``off/`` folder
    (offensive fortunes), non-prose files and anything in all capitals.
    """
    root = Path(fortunes_dir)
    if not root.is_dir():
        raise SalmonnError(f"{root}: fortune files not found; {FORTUNES_HINT}")
    found: set[str] = set()
    for f in sorted(root.iterdir()):
        if not f.is_file() or f.suffix in (".dat", ".u8") or f.name in _FORTUNE_SKIP:
            continue
        text = f.read_text("latin-1")
        for fortune in re.split(r"^%\s*$", text, flags=re.M):
            lines = [ln.strip() for ln in fortune.splitlines()
                     if ln.strip() and not ln.strip().startswith("--") and not ln.startswith("\t\t")]
            for sent in re.split(r"(?<=[.!?])\s+", " ".join(lines)):
                sent = sent.strip()
                if not sent or sent[-1] not in ".!?":
                    continue
                toks = [t.strip(",;:") for t in sent[:-1].split()]
                if not 4 <= len(toks) <= 14:
                    continue
                if not all(_WORD.match(t) for t in toks):
                    continue
                if any(len(t) > 1 and t.isupper() for t in toks):
                    continue
                if any(len(t) <= 2 and t.lower() not in _SHORT_WORDS for t in toks):
                    continue
                found.add(" ".join(toks).lower())
    if len(found) < 50:
        raise SalmonnError(f"{root}: only {len(found)} usable sentences; {FORTUNES_HINT}")
    return sorted(found)


_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0..100 in words, e.g. 42 -> 'forty two'."""
    if n < 20:
        return _UNITS[n]
    if n == 100:
        return "one hundred"
    t, u = divmod(n, 10)
    return _TENS[t] + ("" if u == 0 else " " + _UNITS[u])


def _qa_families() -> dict[str, list[tuple[list[str], str]]]:
    """family -> [(question phrasings, answer)]."""
    fam: dict[str, list[tuple[list[str], str]]] = {}
    arith = []
    for a in range(1, 11):
        for b in range(1, 11):
            wa, wb = number_words(a), number_words(b)
            arith.append(([f"what is {wa} plus {wb}", f"how much is {wa} plus {wb}",
                           f"what do you get if you add {wa} and {wb}"], number_words(a + b)))
            if a > b:
                arith.append(([f"what is {wa} minus {wb}", f"how much is {wa} minus {wb}",
                               f"what is {wb} less than {wa}"], number_words(a - b)))
            if a <= 9 and b <= 9 and a >= 2 and b >= 2:
                arith.append(([f"what is {wa} times {wb}", f"how much is {wa} times {wb}",
                               f"what is {wa} multiplied by {wb}"], number_words(a * b)))
    fam["arithmetic"] = arith
    capitals = {
        "france": "paris", "germany": "berlin", "italy": "rome", "spain": "madrid",
        "japan": "tokyo", "china": "beijing", "russia": "moscow", "egypt": "cairo",
        "greece": "athens", "portugal": "lisbon", "ireland": "dublin", "norway": "oslo",
        "sweden": "stockholm", "finland": "helsinki", "denmark": "copenhagen",
        "austria": "vienna", "poland": "warsaw", "hungary": "budapest", "canada": "ottawa",
        "australia": "canberra", "kenya": "nairobi", "peru": "lima", "cuba": "havana",
        "thailand": "bangkok", "england": "london", "scotland": "edinburgh",
        "belgium": "brussels", "the netherlands": "amsterdam", "turkey": "ankara",
        "argentina": "buenos aires", "mexico": "mexico city", "india": "new delhi",
        "south korea": "seoul", "iran": "tehran", "chile": "santiago", "iceland": "reykjavik",
    }
    fam["capitals"] = [([f"what is the capital of {c}", f"which city is the capital of {c}",
                         f"name the capital city of {c}"], a) for c, a in capitals.items()]
    colours = {
        "the sky on a clear day": "blue", "fresh grass": "green", "snow": "white",
        "a ripe banana": "yellow", "coal": "black", "a ripe tomato": "red", "milk": "white",
        "a lemon": "yellow", "chocolate": "brown", "a carrot": "orange", "the sea": "blue",
        "a strawberry": "red", "a crow": "black", "a pumpkin": "orange", "a frog": "green",
        "an elephant": "grey", "a flamingo": "pink", "a polar bear": "white",
        "a fire engine": "red", "a lime": "green", "a plum": "purple", "the sun": "yellow",
    }
    fam["colours"] = [([f"what colour is {o}", f"what is the colour of {o}",
                        f"tell me the colour of {o}"], a) for o, a in colours.items()]
    animals = {
        "moo": "cow", "woof": "dog", "meow": "cat", "oink": "pig", "baa": "sheep",
        "quack": "duck", "neigh": "horse", "hoot": "owl", "roar": "lion", "hiss": "snake",
        "buzz": "bee", "croak": "frog", "cluck": "chicken", "squeak": "mouse",
    }
    fam["animals"] = [([f"which animal says {s}", f"what animal goes {s}",
                        f"which animal makes the sound {s}"], a) for s, a in animals.items()]
    days = "monday tuesday wednesday thursday friday saturday sunday".split()
    months = ("january february march april may june july august september october november "
              "december").split()
    seq = []
    for name, items in (("day", days), ("month", months)):
        for i, it in enumerate(items):
            nxt = items[(i + 1) % len(items)]
            seq.append(([f"what {name} comes after {it}", f"which {name} follows {it}",
                         f"what is the {name} after {it}"], nxt))
    fam["sequence"] = seq
    opposites = {
        "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad",
        "light": "dark", "open": "closed", "early": "late", "tall": "short", "full": "empty",
        "old": "new", "wet": "dry", "hard": "soft", "loud": "quiet", "rich": "poor",
        "thick": "thin", "heavy": "light", "inside": "outside", "strong": "weak",
        "day": "night", "left": "right", "win": "lose", "true": "false", "clean": "dirty",
        "black": "white", "first": "last", "push": "pull", "above": "below",
    }
    fam["opposites"] = [([f"what is the opposite of {w}", f"what word means the opposite of {w}",
                          f"tell me the opposite of {w}"], a) for w, a in opposites.items()]
    return fam


QA_FAMILIES = _qa_families()
SQA_FAMILY = "opposites"  # never in train/test: the sqa_test split (untrained-instruction eval)
TRAINED_QA_FAMILIES = tuple(f for f in QA_FAMILIES if f != SQA_FAMILY)

_OPEN_TOPICS = (
    "a bicycle", "a kitchen", "the moon", "a river", "a library", "a piano", "an umbrella", "a volcano",
    "a hospital", "the ocean", "a garden", "a camera", "a bridge", "a forest", "a clock", "a train",
    "a desert", "a farm", "a museum", "the weather", "a mountain", "a market", "a lighthouse", "a computer",
    "a teacher", "a doctor", "a painter", "a baker", "a pilot", "a farmer", "an island", "a castle",
    "a rainbow", "a storm", "winter", "summer", "breakfast", "a birthday", "a map", "a letter",
    "a telescope", "a candle", "a violin", "a honey bee", "a whale", "a penguin", "an airport", "a school",
)
_OPEN_FORMS = ("tell me one thing about {}", "what is {} used for", "describe {} in one sentence",
               "why do people like {}", "what do you know about {}")


def open_questions() -> list[str]:
    """Everyday questions without a reference answer: their targets are SmolLM2's own answers."""
    return [form.format(topic) for topic in _OPEN_TOPICS for form in _OPEN_FORMS]




def mini_prompts() -> dict[str, list[str]]:
    """Task -> instruction variants for this corpus.

    The template adds ``<Speech><SpeechHere></Speech>``; no variant contains it. ``{}`` would take
    the sample's ``Q``; no task of this corpus uses it (spoken questions carry ``Q == ""``).
    """
    return {
        "asr": [
            "Recognize the speech and give me the transcription.",
            "Transcribe the speech.",
            "Write down exactly what the speaker says.",
            "What does the person say? Give the exact words.",
            "Listen to the speech and write it down word for word.",
        ],
        "gender_recognition": [
            "Is the speaker male or female?",
            "What is the gender of the speaker? Answer male or female.",
            "Identify the speaker's gender.",
            "Tell me whether a man or a woman is speaking: answer male or female.",
        ],
        "QA": [
            "Answer the question in the audio.",
            "Listen to the spoken question and answer it briefly.",
            "Please answer the question the speaker asks.",
            "The speaker asks a question. What is the answer?",
        ],
        "audiocaption": [
            "Describe the audio.",
            "Write a short caption for the audio.",
            "What can you hear in this recording? Answer in one sentence.",
            "Please describe the sounds you hear.",
        ],
        "sound_event": [
            "What sound event is this? Answer with its name.",
            "Name the sound you hear.",
            "Classify the sound event in the audio.",
        ],
        "music_description": [
            "Describe the music.",
            "Write a short description of this music: tempo, instrument and key.",
            "What kind of music is this?",
            "Listen to the music and describe it in one sentence.",
        ],
        "instrument": [
            "Which instrument is playing?",
            "Name the musical instrument you hear.",
            "What instrument is this? Answer with its name.",
        ],
    }
