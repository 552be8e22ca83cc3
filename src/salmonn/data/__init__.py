"""Data: the synthetic corpus (synth and its parts), the real-speech test set (asterisk), and the text rules
that training and evaluation share (following: which answers follow their instruction; normalize).
"""
