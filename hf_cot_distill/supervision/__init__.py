"""Supervision: which tokens get CE / KD and with what weight (policy), what truncation may cut, and the collators that apply both."""
