"""Loading knowledge bases: JSONL, CSV, bad lines reported by number, unusable files refused."""

import json
from pathlib import Path

import pytest

from chatbot.errors import KnowledgeBaseError
from chatbot.faq.load import load_knowledge_base

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_shipped_store_faq_loads_clean():
    result = load_knowledge_base(REPO / "data/faq/store_faq.jsonl")
    assert result.warnings == []
    assert len(result.entries) >= 40
    categories = {entry.category for entry in result.entries}
    for needed in ("orders", "shipping", "returns", "refunds", "payment", "account", "warranty"):
        assert needed in categories
    assert "contact" in categories
    assert all(entry.alternates for entry in result.entries)
    assert len({entry.id for entry in result.entries}) == len(result.entries)


def test_shipped_csv_loads_clean():
    result = load_knowledge_base(REPO / "data/faq/store_faq.csv")
    assert result.warnings == []
    assert [entry.id for entry in result.entries][:2] == ["shipping-cost", "returns-policy"]
    assert result.entries[0].category == "shipping"
    assert "$5.95" in result.entries[0].answer


def test_jsonl_fields_and_optional_parts(tmp_path):
    lines = [
        {"id": "a", "question": " Q one? ", "answer": "A one.", "alternates": ["x", " ", "y"]},
        {"id": 7, "question": "Q two?", "answer": "A two.", "category": "misc"},
    ]
    path = write(tmp_path / "kb.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    result = load_knowledge_base(path)
    first, second = result.entries
    assert (first.id, first.question, first.alternates, first.category) == (
        "a",
        "Q one?",
        ("x", "y"),
        None,
    )
    assert (second.id, second.category) == ("7", "misc")
    assert result.warnings == []


def test_bad_jsonl_lines_are_reported_by_number_and_the_rest_loads(tmp_path):
    text = "\n".join(
        [
            json.dumps({"id": "ok1", "question": "Q?", "answer": "A."}),  # line 1
            "{not json",  # line 2
            json.dumps({"id": "no-answer", "question": "Q?"}),  # line 3
            "",  # line 4: blank, ignored
            json.dumps(["a", "list"]),  # line 5
            json.dumps({"id": "ok1", "question": "Again?", "answer": "Dup."}),  # line 6
            json.dumps({"id": "alt", "question": "Q?", "answer": "A.", "alternates": "one"}),  # 7
            json.dumps({"id": "ok2", "question": "Q2?", "answer": "A2."}),  # line 8
        ]
    )
    result = load_knowledge_base(write(tmp_path / "kb.jsonl", text))
    assert [entry.id for entry in result.entries] == ["ok1", "ok2"]
    assert [w.split(":")[0] for w in result.warnings] == [
        "line 2",
        "line 3",
        "line 5",
        "line 6",
        "line 7",
    ]
    assert "not valid JSON" in result.warnings[0]
    assert "'answer'" in result.warnings[1]
    assert "duplicate id 'ok1' (first on line 1)" in result.warnings[3]
    assert "alternates" in result.warnings[4]


def test_csv_bad_rows_are_reported_by_their_line(tmp_path):
    text = (
        "id,question,answer,category\n"
        'r1,"How, exactly?","Like this.",cat\n'  # line 2
        'r2,"A question\nover two lines?",An answer.,\n'  # lines 3-4
        "r3,,No question here.,\n"  # line 5
        "r4,Q?,A.,cat,extra\n"  # line 6
        "r5,Q5?,A5.,\n"  # line 7
    )
    result = load_knowledge_base(write(tmp_path / "kb.csv", text))
    assert [entry.id for entry in result.entries] == ["r1", "r2", "r5"]
    assert result.entries[1].question == "A question\nover two lines?"
    assert [w.split(":")[0] for w in result.warnings] == ["line 5", "line 6"]


def test_csv_without_the_required_header_is_an_error(tmp_path):
    with pytest.raises(KnowledgeBaseError, match="header must be id,question,answer"):
        load_knowledge_base(write(tmp_path / "kb.csv", "name,text\nx,y\n"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", "is empty"),
        ("blank.jsonl", "\n  \n", "is empty"),
        ("garbage.jsonl", "hello\nworld\n", "no valid FAQ entries \\(line 1: not valid JSON"),
        ("latin1.jsonl", "caf\xe9".encode("latin-1"), "not UTF-8"),
    ],
)
def test_unusable_files_raise_a_clear_error(tmp_path, name, content, message):
    with pytest.raises(KnowledgeBaseError, match=message):
        load_knowledge_base(write(tmp_path / name, content))


def test_missing_file_and_folder_raise_a_clear_error(tmp_path):
    with pytest.raises(KnowledgeBaseError, match="does not exist"):
        load_knowledge_base(tmp_path / "nope.jsonl")
    with pytest.raises(KnowledgeBaseError, match="is a folder"):
        load_knowledge_base(tmp_path)
