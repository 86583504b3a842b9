"""The registry of supported architectures, keyed by the HF class name in config.json.

Adding an architecture is adding one module here whose class carries `@register("HFName")`:
every module of this package is imported on first lookup, so there is no second list to keep.
"""

import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

from converter.errors import SourceError

if TYPE_CHECKING:
    from converter.architectures.base import Architecture
    from converter.checkpoint import Checkpoint

_REGISTRY: dict[str, type["Architecture"]] = {}
_A = TypeVar("_A", bound=type["Architecture"])


def register(*hf_names: str):
    """Class decorator: the class writes checkpoints whose config names one of `hf_names`."""

    def decorate(cls: _A) -> _A:
        for name in hf_names:
            if name in _REGISTRY:
                raise ValueError(f"architecture {name} registered twice")
            _REGISTRY[name] = cls
        return cls

    return decorate


def _import_all() -> None:
    """Import every architecture module once so their decorators run."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def supported() -> list[str]:
    """The HF architecture names the converter can write."""
    _import_all()
    return sorted(_REGISTRY)


def prunable() -> list[str]:
    """The HF architecture names converter.optimize.prune can prune (its own output aside)."""
    _import_all()
    return [n for n in supported() if _REGISTRY[n].prunable and not n.startswith("Pruned")]


def architecture_for(checkpoint: "Checkpoint") -> "Architecture":
    """The writer for this checkpoint, or a SourceError listing what is supported."""
    name = checkpoint.architecture
    _import_all()
    if name not in _REGISTRY:
        raise SourceError(f"unsupported architecture {name}; supported: {', '.join(supported())}")
    return _REGISTRY[name](checkpoint)
