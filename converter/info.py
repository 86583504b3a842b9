"""What is inside a GGUF file: `converter info FILE.gguf` and the conversion report read it."""

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gguf

from converter.errors import SourceError
from converter.gguf_keys import PROJECT_PREFIX, file_type_name


@dataclass
class GGUFSummary:
    """The facts a person checks first about a model file."""

    path: str
    file_bytes: int
    architecture: str
    tensor_count: int
    parameter_count: int
    tensor_types: dict[str, int]
    file_type: str | None
    tokenizer_model: str | None
    tokenizer_pre: str | None
    vocab_size: int
    chat_template: bool
    project_keys: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_gguf(path: Path) -> gguf.GGUFReader:
    """A reader over the GGUF at `path`; SourceError if it is missing or not a readable GGUF."""
    if not path.is_file():
        raise SourceError(f"{path} does not exist or is not a file")
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - ValueError, struct errors on damaged files
        raise SourceError(f"{path} is not a readable GGUF file ({exc})") from exc


def read_summary(path: Path) -> GGUFSummary:
    """Summarize a GGUF; a missing or unreadable file is a SourceError."""
    reader = open_gguf(path)
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    file_type = field_value(reader, gguf.Keys.General.FILE_TYPE)
    return GGUFSummary(
        path=str(path),
        file_bytes=path.stat().st_size,
        architecture=str(field_value(reader, gguf.Keys.General.ARCHITECTURE)),
        tensor_count=len(reader.tensors),
        parameter_count=int(sum(t.n_elements for t in reader.tensors)),
        tensor_types=dict(Counter(t.tensor_type.name for t in reader.tensors).most_common()),
        file_type=file_type_name(file_type) if file_type is not None else None,
        tokenizer_model=field_value(reader, gguf.Keys.Tokenizer.MODEL),
        tokenizer_pre=field_value(reader, gguf.Keys.Tokenizer.PRE),
        vocab_size=len(tokens.data) if tokens is not None else 0,
        chat_template=reader.get_field(gguf.Keys.Tokenizer.CHAT_TEMPLATE) is not None,
        project_keys={
            name: f.contents()
            for name, f in reader.fields.items()
            if name.startswith(PROJECT_PREFIX)
        },
    )


def tensor_types_by_name(path: Path) -> dict[str, str]:
    """Each tensor's GGML type, by tensor name."""
    return {t.name: t.tensor_type.name for t in open_gguf(path).tensors}


def field_value(reader: gguf.GGUFReader, key: str) -> Any:
    """The value of a metadata key, or None when the file has no such key."""
    found = reader.get_field(key)
    return found.contents() if found is not None else None


def format_info(summary: GGUFSummary) -> str:
    """The summary as aligned lines for a terminal."""
    types = ", ".join(f"{name} x{count}" for name, count in summary.tensor_types.items())
    rows = [
        ("file", summary.path),
        ("size", f"{summary.file_bytes / 1e6:.1f} MB"),
        ("architecture", summary.architecture),
        ("file type", summary.file_type or "-"),
        ("parameters", f"{summary.parameter_count:,}"),
        ("tensors", f"{summary.tensor_count} ({types})"),
        ("tokenizer", f"{summary.tokenizer_model or '-'} (pre: {summary.tokenizer_pre or '-'})"),
        ("vocabulary", str(summary.vocab_size)),
        ("chat template", "yes" if summary.chat_template else "no"),
    ]
    rows += [(key, str(value)) for key, value in summary.project_keys.items()]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
