"""Turn a Hugging Face causal LM into a pruned, quantized GGUF for llama.cpp."""
