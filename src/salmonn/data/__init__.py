"""Data: synthetic corpus generation (synth) and, later, datasets."""
