"""Where the converter keeps models it builds; light enough for the chatbot to import."""

import os
from pathlib import Path

import platformdirs

APP_NAME = "offline-chatbot"
CACHE_ENV = "CHATBOT_CACHE_DIR"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_QUANT = "Q4_K_M"


def cache_dir() -> Path:
    """The model cache: $CHATBOT_CACHE_DIR, else the user cache folder."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME))


def default_checkpoint_dir() -> Path:
    """The default model as an ordinary Hugging Face checkpoint folder."""
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def default_gguf_path(quant: str = DEFAULT_QUANT) -> Path:
    """The default model converted to GGUF at the given quantization."""
    return cache_dir() / "models" / f"{DEFAULT_MODEL_NAME}-{quant}.gguf"
