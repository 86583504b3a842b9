"""Where the project keeps its files: one rule (environment variable, else the platform's user
folder) for the model cache, the chatbot's data and its config; light enough for the chatbot."""

import os
from pathlib import Path
from typing import Literal

import platformdirs

APP_NAME = "offline-chatbot"
CACHE_ENV = "CHATBOT_CACHE_DIR"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_QUANT = "Q4_K_M"
# The repository's data/ folder (calibration text, held-out text, sample FAQs).
PROJECT_DATA = Path(__file__).resolve().parent.parent / "data"

_PLATFORM_DIRS = {
    "cache": platformdirs.user_cache_dir,
    "data": platformdirs.user_data_dir,
    "config": platformdirs.user_config_dir,
}


def user_dir(kind: Literal["cache", "data", "config"], env: str) -> Path:
    """The folder named by the environment variable `env`, else the platform's user folder."""
    override = os.environ.get(env)
    return Path(override) if override else Path(_PLATFORM_DIRS[kind](APP_NAME))


def cache_dir() -> Path:
    """The model cache: $CHATBOT_CACHE_DIR, else the user cache folder."""
    return user_dir("cache", CACHE_ENV)


def default_checkpoint_dir() -> Path:
    """The default model as an ordinary Hugging Face checkpoint folder."""
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def default_gguf_path(quant: str = DEFAULT_QUANT) -> Path:
    """The default model converted to GGUF at the given quantization."""
    return cache_dir() / "models" / f"{DEFAULT_MODEL_NAME}-{quant}.gguf"
