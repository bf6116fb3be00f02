"""Models: safetensors-only loading, output heads, decoder lookup, student init, tokenizer compatibility, GGUF conversion, FLOP counting."""
