"""`chatbot faq-eval`: the bench's retrieval measures on a user's own labelled questions."""

import json

import pytest

from chatbot.cli.commands import main
from chatbot.errors import KnowledgeBaseError
from chatbot.faq.evaluation import HANDOFF, LabelledQuestion, evaluate, load_questions
from chatbot.faq.knowledge_base import KnowledgeBase

GYM = [
    {"id": "hours", "question": "When is the gym open?", "answer": "6 am to 10 pm daily."},
    {"id": "towels", "question": "Do you rent towels?", "answer": "Towels cost $2."},
    {"id": "sauna", "question": "Is there a sauna?", "answer": "Yes, on floor 2, free."},
]
QUESTIONS = [
    {"question": "What time does the gym close?", "expected": "hours"},
    {"question": "Can I borrow a towel?", "expected": "towels"},
    {"question": "Who won the football last night?", "expected": "handoff"},
]


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def gym(tmp_path):
    faq = write_lines(tmp_path / "gym.jsonl", GYM)
    with KnowledgeBase.open(faq, index_dir=tmp_path / "idx") as kb:
        yield kb


def test_bad_lines_are_warnings_with_their_number(tmp_path):
    path = write_lines(
        tmp_path / "q.jsonl",
        [
            QUESTIONS[0],
            "{not json",
            {"question": "Is there a pool?", "expected": "pool"},
            {"question": "  ", "expected": "hours"},
            {"question": "Parking?"},
            QUESTIONS[2],
            {"question": "Is there a sauna?", "expected": None},  # null: no entry answers it
        ],
    )
    questions, warnings = load_questions(path, {"hours", "towels"})
    assert questions == [
        LabelledQuestion("What time does the gym close?", "hours"),
        LabelledQuestion("Who won the football last night?", HANDOFF),
        LabelledQuestion("Is there a sauna?", HANDOFF),
    ]
    assert [w.split(":")[0] for w in warnings] == ["line 2", "line 3", "line 4", "line 5"]
    assert "names no entry of the FAQ: 'pool'" in warnings[1]


def test_a_follow_up_line_carries_the_message_before(tmp_path):
    row = {"question": "And towels?", "expected": "towels", "previous": "When is the gym open?"}
    questions, warnings = load_questions(
        write_lines(tmp_path / "q.jsonl", [row, {**row, "previous": 3}]), {"towels"}
    )
    assert questions == [LabelledQuestion("And towels?", "towels", "When is the gym open?")]
    assert warnings == ["line 2: 'previous' must be text (the message before this one); skipped"]


def test_a_file_with_no_usable_question_is_an_error(tmp_path):
    with pytest.raises(KnowledgeBaseError, match="has no labelled questions"):
        load_questions(write_lines(tmp_path / "q.jsonl", ["[]"]), {"hours"})
    with pytest.raises(KnowledgeBaseError, match="does not exist"):
        load_questions(tmp_path / "missing.jsonl", {"hours"})


def test_rates_count_each_kind_of_question_at_each_threshold(gym):
    questions = [LabelledQuestion(q["question"], q["expected"]) for q in QUESTIONS]
    result = evaluate(gym, questions)
    assert (result.covered, result.uncovered, result.threshold) == (2, 1, gym.confidence)
    assert result.handoff_threshold == gym.bands.handoff < gym.confidence
    thresholds = [r.threshold for r in result.rates]
    assert thresholds == sorted(thresholds) and gym.confidence in thresholds
    in_use = result.in_use
    assert in_use.top1 == in_use.top3 == 1.0
    assert (in_use.handoff_recall, in_use.false_handoffs) == (1.0, 0.0)
    assert (in_use.uncovered_direct, in_use.covered_resolved) == (0.0, 1.0)
    assert in_use.covered_direct + in_use.covered_wrong <= 1.0
    assert result.answered_uncovered == [] and result.handed_off_covered == []
    # A higher answer threshold can only answer less directly: of both kinds.
    for lower, higher in zip(result.rates, result.rates[1:], strict=False):
        assert higher.handoff_recall >= lower.handoff_recall
        assert higher.covered_direct <= lower.covered_direct


def test_command_prints_the_sweep_and_json(gym, tmp_path, capsys):
    questions = write_lines(tmp_path / "q.jsonl", QUESTIONS)
    common = ["--faq", str(gym.path)]
    assert main(["faq-eval", str(questions), *common]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("2 covered and 1 uncovered questions")
    assert "answer at  top-1  top-3  uncovered answered  covered answered  resolved" in out
    in_use = [line for line in out.splitlines() if line.endswith("<- in use")]
    assert len(in_use) == 1 and in_use[0].split()[0] == "check"  # the answer check decides
    assert f"\n{gym.confidence:>9.2f}  " in out  # ... and the threshold alone is shown too
    assert err.startswith("note: FAQ thresholds: answer at")  # measured, and said on start
    assert "up the answer check decides" in err
    assert main(["faq-eval", str(questions), *common, "--json", "--faq-confidence", "0.3"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert "answer check" not in err  # a threshold set by hand: the threshold alone
    assert result["threshold"] == 0.3 and len(result["rates"]) == 7
    assert result["checked"] is None  # a threshold set by hand: the threshold alone decides
    assert result["handoff_threshold"] <= 0.3


def test_command_without_a_faq_is_one_error_line(tmp_path, capsys):
    questions = write_lines(tmp_path / "q.jsonl", QUESTIONS)
    assert main(["faq-eval", str(questions)]) == 2
    assert capsys.readouterr().err == "error: faq-eval needs the knowledge base: add --faq FILE\n"
