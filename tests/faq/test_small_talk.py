"""Greetings, thanks and goodbyes get a line of their own; anything with a question goes on."""

import json

import pytest

from chatbot.faq.small_talk import (
    ACK_REPLY,
    GOODBYE_REPLY,
    GREETING_REPLY,
    THANKS_REPLY,
    small_talk_reply,
)
from tests.faq.conftest import HELPDESK_EVAL, STORE_EVAL


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("hi", GREETING_REPLY),
        ("Hello!", GREETING_REPLY),
        ("Good morning team", GREETING_REPLY),
        ("thanks", THANKS_REPLY),
        ("Thank you so much, that helps", THANKS_REPLY),
        ("Perfect, thank you very much", THANKS_REPLY),
        ("Thank you for your help", THANKS_REPLY),
        ("ok bye", GOODBYE_REPLY),
        ("thanks, bye!", GOODBYE_REPLY),  # the later kind wins
        ("no thanks, that's all", GOODBYE_REPLY),  # was looked up, and asked back
        ("Nope, nothing else. Bye", GOODBYE_REPLY),
        ("ok", ACK_REPLY),
        ("great", ACK_REPLY),
    ],
)
def test_small_talk(text, reply):
    assert small_talk_reply(text) == reply


@pytest.mark.parametrize(
    "text",
    [
        "hi, where is my order?",
        "Hello, can I return boots?",
        "thanks but my order has not arrived",
        "Is that all?",
        "",
        "ok ok ok ok great great",  # filler alone, but too long to be a nod
        "no",  # these answer the bot's "Did you mean ...?" (read as a pick)
        "no thanks",
    ],
)
def test_questions_are_not_small_talk(text):
    assert small_talk_reply(text) is None


def test_no_question_of_either_evaluation_set_is_small_talk():
    for path in (STORE_EVAL, HELPDESK_EVAL):
        questions = [json.loads(line)["question"] for line in path.read_text().splitlines()]
        assert not [q for q in questions if small_talk_reply(q)]
