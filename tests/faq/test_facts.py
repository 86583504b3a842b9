"""The fact check on grounded replies: numbers and addresses the cited article does not state."""

import pytest

from chatbot.faq.facts import facts, unsupported_facts

ARTICLE = (
    "We process the refund within 3 business days after the warehouse receives your return; "
    "your bank then needs 5-10 business days. Orders over $75 ship free. Write to "
    "support@larkspur.example or see larkspur.example/returns. Returns are open for thirty "
    "days. Pickup 10 am-7 pm daily, 1,200 stores."
)


@pytest.mark.parametrize(
    ("reply", "made_up"),
    [
        ("Your refund takes 3 business days, then 5 to 10 business days at the bank.", []),
        ("Your refund takes 3 weeks.", ["3 weeks"]),  # the number is there, not its unit
        ("It arrives within 24 hours.", ["24 hours"]),
        ("Free shipping over $75, and we have 1200 stores.", []),  # 1,200 written 1200
        ("Free shipping over $50.", ["$50"]),
        ("You have 30 days to return it.", []),  # the article spells it out
        ("Email support@larkspur.com for help.", ["support@larkspur.com"]),
        ("Email support@larkspur.example or see larkspur.example/returns.", []),
        ("Pick up from 10 am to 7 pm.", []),
        ("A 2.5% fee applies, e.g. on holidays.", ["2.5%"]),
        ("Steps:\n1. Pack it.\n2) Ship it within 3 business days.", []),  # list markers
        ("We hope this helps!", []),
    ],
)
def test_unsupported_facts(reply, made_up):
    assert unsupported_facts(reply, [ARTICLE]) == made_up


def test_brand_names_the_article_does_not_give():
    article = "In the US we ship with UPS and USPS. International orders go with DHL Express."
    reply = "We ship with FedEx or UPS in the US, DHL abroad. OK? Our Team can help."
    assert unsupported_facts(reply, [article]) == ["FedEx"]  # capitalised words are no brands


def test_the_customers_own_numbers_are_grounds_too():
    reply = "Order 88123 was placed 45 days ago, past the 30 days."
    assert unsupported_facts(reply, [ARTICLE]) == ["88123", "45 days"]
    assert unsupported_facts(reply, [ARTICLE, "My order 88123 came 45 days ago"]) == []


def test_each_fact_once_in_order_as_the_user_sees_it():
    reply = "Call 555-0100 within 3 days, 3 days, $5 each."
    assert unsupported_facts(reply, []) == ["555-0100", "3 days", "$5"]
    # A range is two numbers: both halves must be grounded.
    assert [fact.key for fact in facts(reply)] == ["555", "0100", "3 days", "5"]
    assert unsupported_facts(reply, ["555 and 3 days for $5"]) == ["555-0100"]
