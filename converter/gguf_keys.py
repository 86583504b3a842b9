"""What the converter writes into a GGUF and the chatbot reads back: key names, file-type names.

The converter owns these (it writes them); the chatbot imports them from here, so the two
cannot drift. Light on purpose: no gguf and no llama.cpp at import, the chatbot starts fast.
"""

import functools

# The project's own metadata namespace (offload plan, ...): `converter info` lists these keys.
PROJECT_PREFIX = "chatbot."
OFFLOAD_PREFIX = PROJECT_PREFIX + "offload."
KEY_N_GPU_LAYERS = OFFLOAD_PREFIX + "n_gpu_layers"
KEY_OFFLOAD_KQV = OFFLOAD_PREFIX + "offload_kqv"
KEY_FLASH_ATTN = OFFLOAD_PREFIX + "flash_attn"
KEY_N_CTX = OFFLOAD_PREFIX + "n_ctx"
KEY_GPU_MEMORY = OFFLOAD_PREFIX + "gpu_memory"

# The context the chatbot runs a model with unless told otherwise, and so the one an offload
# plan sizes the KV cache for. (Perplexity windows are another thing: evaluate.PERPLEXITY_CTX.)
CHAT_CTX = 4096


def file_type_name(value: int) -> str:
    """`general.file_type` as llama.cpp names it: 15 -> "Q4_K_M", 0 -> "F32", 1 -> "F16"."""
    return _file_type_names().get(int(value), f"type {value}")


@functools.cache
def _file_type_names() -> dict[int, str]:
    """llama.cpp's own enum, read from llama-cpp-python once (loaded here, not at import:
    the chatbot has it loaded already, `converter info` pays for it only when asked)."""
    import llama_cpp

    names = {}
    for name in dir(llama_cpp):
        if name.startswith("LLAMA_FTYPE_"):
            short = name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").removeprefix("ALL_")
            names.setdefault(int(getattr(llama_cpp, name)), short)
    return names
