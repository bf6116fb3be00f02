"""Reasoning traces: public trace formats -> canonical samples, their encoding with section ids, and the CHAMP texts."""
