"""Follow-ups are read with the message before; new messages are not pulled to the old topic."""

import pytest

from chatbot.faq.follow_up import looks_like_follow_up


@pytest.mark.parametrize(
    "text",
    [
        "And express?",
        "Sundays too?",
        "How much extra?",
        "What about from Canada?",
        "What if it already shipped?",
        "Even on clearance?",
        "How do I claim it?",
        "Can I get express there?",
    ],
)
def test_follow_ups(text):
    assert looks_like_follow_up(text)


@pytest.mark.parametrize(
    "text",
    [
        "Tell me a joke",
        "Do you accept Apple Pay?",
        "Who won the game last night?",
        "How do I change the email address on my account?",
        "And I would also like to know which payment methods you accept when shipping abroad",
        "what's the weather",  # short is not leaning on the message before
        "lol are you a robot",
    ],
)
def test_new_messages(text):
    assert not looks_like_follow_up(text)


@pytest.mark.parametrize("unrelated", ["Tell me a joke", "What is 17 times 23?"])
def test_an_unrelated_message_after_a_question_is_still_handed_off(store_kb, unrelated):
    assert not store_kb.retrieve(unrelated, previous="Can I cancel my order?").confident
