"""Engines behind one protocol: embedded llama.cpp, or a remote OpenAI-compatible server."""
