"""Offline terminal chatbot running GGUF models in-process through llama.cpp."""
