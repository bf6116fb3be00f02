"""Compression for serving (MISSION §4): structured pruning, post-training quantization, KD recovery."""
