"""`salmonn data ...`: the commands that build corpora and test sets (name -> function; docstrings are the help)."""

from .asterisk import asterisk
from .joined import joined
from .phone import phone
from .real_sounds import real_sounds
from .real_speech import real_speech
from .synth import synth

COMMANDS = {"synth": synth, "asterisk": asterisk, "real-sounds": real_sounds, "real-speech": real_speech,
            "phone": phone, "joined": joined}
