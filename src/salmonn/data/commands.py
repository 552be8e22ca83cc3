"""`salmonn data ...`: the commands that build corpora and test sets (name -> function; docstrings are the help)."""

from .asterisk import asterisk
from .synth import synth

COMMANDS = {"synth": synth, "asterisk": asterisk}
