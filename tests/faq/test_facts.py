"""The fact check on grounded replies: numbers and addresses the cited article does not state."""

import pytest

from chatbot.faq.facts import echoed_premises, facts, missing_facts, unsupported_facts

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
    reply = "We ship with FedEx or UPS in the US, DHL abroad. OK? Our team can help."
    assert unsupported_facts(reply, [article]) == ["FedEx"]


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


PAYMENTS = (
    "We accept Visa, Mastercard, American Express, PayPal and Klarna. We do not accept cash "
    "on delivery, checks or bank transfers."
)


def test_a_name_the_article_lacks_is_unsupported_even_when_the_customer_said_it():
    """Asked "can I pay with bitcoin?", SmolLM2 replied this, citing the payment article."""
    reply = "We accept Bitcoin, Likesum, and other cryptocurrencies."
    assert unsupported_facts(reply, [PAYMENTS]) == ["Bitcoin", "Likesum"]
    # A capitalised word that starts a sentence is no name; one the article has is grounded.
    assert unsupported_facts("Yes. Paypal and Klarna work.", [PAYMENTS]) == []


def test_a_reply_adopting_the_customers_premise_is_caught():
    question = "can I pay with bitcoin at checkout?"
    assert echoed_premises("Yes, you can pay with bitcoin.", question, PAYMENTS) == ["bitcoin"]
    # Words the article has, or that the reply does not repeat, are not premises.
    assert echoed_premises("We accept PayPal and Klarna.", question, PAYMENTS) == []
    assert echoed_premises("Refunds take 3 days.", "how long do refunds take", "A refund") == []


def test_the_facts_a_reply_drops():
    assert missing_facts("Use Visa, Mastercard or PayPal.", PAYMENTS) == [
        "American",
        "Express",
        "Klarna",
    ]
    assert missing_facts(ARTICLE, ARTICLE) == []
    assert "3 business days" in missing_facts("It takes a while.", ARTICLE)
