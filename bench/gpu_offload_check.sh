#!/usr/bin/env bash
# On a GPU machine: load a GGUF with the offload plan stored in it and show that llama.cpp puts
# that many layers on the GPU. Not run by bench/run.py (CI has no GPU).
#
#   bench/gpu_offload_check.sh MODEL.gguf [GPU_MEMORY [CTX]]
#
# With GPU_MEMORY (e.g. 8GiB) the plan is first recomputed for that card and written into the
# file (`converter plan --write`). Needs llama-cpp-python built with CUDA, e.g.
#   CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36
# Exit status 0 when the layers llama.cpp reports offloaded equal the plan's n_gpu_layers.
set -euo pipefail
model=${1:?usage: $0 MODEL.gguf [GPU_MEMORY [CTX]]}
python=${PYTHON:-.venv/bin/python}
if [[ $# -ge 2 ]]; then
    "$python" -m converter plan "$model" --gpu-memory "$2" --ctx "${3:-4096}" --write
fi
"$python" - "$model" <<'PY'
import ctypes
import re
import sys
from pathlib import Path

import llama_cpp

from chatbot.engines.offload import resolve_offload

lines = []


@llama_cpp.llama_log_callback
def collect(level, text, user_data):
    lines.append(text.decode("utf-8", "replace"))


llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
path = Path(sys.argv[1])
s = resolve_offload(path)
print(f"plan in {path.name}: {s.description}; n_gpu_layers={s.n_gpu_layers} "
      f"offload_kqv={s.offload_kqv} flash_attn={s.flash_attn} ctx={s.planned_ctx}")
if not s.gpu_build:
    sys.exit("error: this llama-cpp-python is a CPU-only build; install a CUDA build (see above)")
llm = llama_cpp.Llama(str(path), n_gpu_layers=s.n_gpu_layers, offload_kqv=s.offload_kqv,
                      flash_attn=s.flash_attn, n_ctx=s.planned_ctx or 4096, verbose=True)
out = llm("The capital of France is", max_tokens=8, temperature=0)
log = "".join(lines)
for line in log.splitlines():
    if re.search(r"offloaded \d+/\d+ layers|model buffer size|KV buffer size|compute buffer size", line):
        print(line.strip())
print("sample:", repr(out["choices"][0]["text"]))
found = re.search(r"offloaded (\d+)/(\d+) layers to GPU", log)
if not found or int(found.group(1)) != s.n_gpu_layers:
    sys.exit(f"FAIL: plan {s.n_gpu_layers} layers, llama.cpp: {found.group(0) if found else 'none'}")
print(f"OK: {found.group(0)} as planned")
PY
