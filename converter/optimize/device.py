"""Where the torch steps (calibration, scoring, healing) run and in which precision.

One command serves a 7B model on a GPU box and a 135M model on a laptop: `auto` takes a GPU
when torch sees one, and the dtype follows the device (bfloat16 on GPU, float32 on CPU, where
bfloat16 matmuls are slow and lose precision for nothing).
"""

from typing import TYPE_CHECKING

from converter.errors import ConverterError

if TYPE_CHECKING:  # torch loads only when a torch step runs, not for `converter --help`
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> "torch.device":
    """The torch device for `--device`; asking for cuda without one is the user's to fix."""
    import torch

    if name not in DEVICES:
        raise ConverterError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConverterError("--device cuda: torch sees no GPU here; use --device cpu or auto")
    return torch.device(name)


def dtype_for(device: "torch.device") -> "torch.dtype":
    """bfloat16 on a GPU, float32 on the CPU."""
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32
