"""A customer who asks for a person is handed off at once; questions about contact are not."""

import json

import pytest

from chatbot.faq.person_request import asks_for_a_person
from tests.faq.conftest import HELPDESK_EVAL, STORE_EVAL


@pytest.mark.parametrize(
    "text",
    [
        "I want to talk to a human",
        "Can I speak to a real person please?",
        "agent",
        "human please",
        "A real person!",
        "Connect me with customer service",
        "Put me through to an operator",
        "I need a representative",
        "let me speak to your manager",
        "Can I talk to someone?",
        "I'd like to chat with a live agent",
        "Transfer me to a support agent",
    ],
)
def test_requests_for_a_person(text):
    assert asks_for_a_person(text)


@pytest.mark.parametrize(
    "text",
    [
        "Is there an email address for customer service?",
        "Do you have live chat support?",
        "Is there a number I can call for help?",
        "What time does your call center open on Saturday?",
        "How do I become an affiliate agent?",
        "Can someone else pick up my order?",
        "I want someone to pick up my parcel for me",
        "The delivery person said it was left with a neighbour",
        "Do I need to be a member to order?",
        # someone of the customer's own, or a thing of ours: not a request for our person
        "Does the purchase need my supervisor's sign-off?",
        "I need my manager to approve it first",
        "I want the agent's reference number from my last chat",
    ],
)
def test_questions_that_are_not_requests(text):
    assert not asks_for_a_person(text)


def test_no_question_of_either_evaluation_set_reads_as_a_request():
    for path in (STORE_EVAL, HELPDESK_EVAL):
        questions = [json.loads(line)["question"] for line in path.read_text().splitlines()]
        assert not [q for q in questions if asks_for_a_person(q)]
