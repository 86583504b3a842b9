"""Checking a grounded reply against its article: the facts it makes up, adopts or drops.

A small model rewriting a help article keeps most of its facts but also invents some ("3 weeks"
where the article says "3 business days", "FedEx" where it says "UPS"). Numbers, email and web
addresses, brands and names are what a customer acts on, and a reply must have them from the
article: each one it states that the article does not is reported (`unsupported_facts`). The
customer's own words are no ground: asked "can I pay with bitcoin?", a reply "We accept
Bitcoin" affirms what the article does not say, so a word of the question that the reply
repeats and the article lacks counts too (`echoed_premises`). And a reply that drops one of
the article's facts (`missing_facts`) is not the article's answer. The FAQ policy then shows
the article's own text instead (chatbot.faq.policy).
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A host name with at least two labels and a top-level part of 3+ letters (no "e.g", "a.m").
_WEB = re.compile(r"\b(?:[a-z0-9-]+\.)+[a-z]{3,}(?:/[\w/-]*\w)?", re.IGNORECASE)
# A number or a range of two (1,200 and 2.5 are one number), and the two words after it.
_NUMBER = re.compile(
    r"(?<![\w.$])\$?(\d+(?:[.,]\d+)*)(?:\s?(?:-|–|to)\s?(\d+(?:[.,]\d+)*))?"
    r"((?:\s?%|[\s-]+[a-z]+){0,2})",
    re.IGNORECASE,
)
# Brand-shaped words: a capital inside (FedEx, PayPal, iPhone) or all capitals (UPS, DHL).
# Plain capitalised words are left alone: they start sentences and are mostly not names.
_BRAND = re.compile(r"\b(?:[A-Za-z]+[a-z][A-Z][A-Za-z]*|[A-Z]{2,})\b")
_NOT_BRANDS = {"OK", "AI", "FAQ", "PS", "ID", "TV"}
# Names: a capitalised word that does not start a sentence ("Bitcoin", "Portland", "Klarna").
_NAME = re.compile(r"(?<![\w'’])[A-Z][a-z]+(?=\b)")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*|[\"“(]\s*)$")
_NOT_NAMES = {"I", "Im", "Ill", "Ive", "Id"}
_WORD = re.compile(r"[a-z0-9]+")
# Words of a question that say nothing a reply could wrongly affirm.
_PLAIN = frozenset(
    """about after again also answer anything around because before being below could does
    doing done each else even ever every from have help here into just know like longer make
    many more most much need only other over please question really should some still sure
    than that their them then there these they thing things this those through very want
    what when where which while will with would your yours take takes took long time
    give find work works come comes going keep tell look able okay fine good great""".split()  # noqa: SIM905
)
_LIST_MARKER = re.compile(r"^\s*\d+[.)](?=\s)", re.MULTILINE)  # "1. " numbers a list, says nothing
# Words that give a number its meaning: "3 weeks" is not "3 business days".
_UNITS = {
    "%": "percent",
    "percent": "percent",
    "am": "o'clock",
    "pm": "o'clock",
    "dollars": "dollars",
    "points": "points",
    "point": "points",
} | {
    f"{unit}{plural}": f"{unit}s"
    for unit in ("minute", "hour", "day", "week", "month", "year")
    for plural in ("", "s")
}
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "  # noqa: SIM905
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "ninety": "90", "hundred": "100"}


@dataclass(frozen=True)
class Fact:
    key: str  # what is compared: the digits of a number, a lowercased address
    shown: str  # what the user sees: "3 weeks", "support@example.com"


def facts(text: str) -> list[Fact]:
    """The numbers (with their unit, when one follows), email and web addresses, in order."""
    found: dict[str, Fact] = {}
    rest = _LIST_MARKER.sub(" ", text)
    for pattern in (_EMAIL, _WEB):
        for match in pattern.finditer(rest):
            address = match.group(0).rstrip(".").lower()
            found.setdefault(address, Fact(address, match.group(0).rstrip(".")))
        rest = pattern.sub(" ", rest)
    for match in _BRAND.finditer(rest):
        if match.group(0) not in _NOT_BRANDS:
            found.setdefault(match.group(0).lower(), Fact(match.group(0).lower(), match.group(0)))
    for match in _NAME.finditer(rest):
        starts_sentence = _SENTENCE_START.search(rest[: match.start()])
        if not starts_sentence and match.group(0) not in _NOT_NAMES:
            found.setdefault(match.group(0).lower(), Fact(match.group(0).lower(), match.group(0)))
    for match in _NUMBER.finditer(rest):
        unit, shown = _unit(match)
        for number in filter(None, (match.group(1), match.group(2))):
            key = number.replace(",", "") + (f" {unit}" if unit else "")
            found.setdefault(key, Fact(key, shown))
    return list(found.values())


def _unit(match: re.Match) -> tuple[str, str]:
    """The unit of a matched number (or ""), and the number as shown: with its unit word."""
    numbers_end = match.end(2) if match.group(2) else match.end(1)
    for word in re.finditer(r"%|[a-z]+", match.group(3), re.IGNORECASE):
        if word.group(0).lower() in _UNITS:
            shown = match.string[match.start() : match.start(3) + word.end()]
            return _UNITS[word.group(0).lower()], shown
    return "", match.string[match.start() : numbers_end]


def _keys(text: str) -> set[str]:
    """What a reply may repeat from this text: its facts (numbers in words too), bare numbers."""
    spelled = re.sub(
        r"\b[A-Za-z]+\b", lambda word: _NUMBER_WORDS.get(word.group(0).lower(), word.group(0)), text
    )
    keys = {fact.key for fact in facts(spelled)}
    # Every word counts as grounds for a name: "bitcoin" in the article grounds "Bitcoin".
    return keys | {key.split(" ")[0] for key in keys} | set(_WORD.findall(text.lower()))


def unsupported_facts(reply: str, grounds: Iterable[str]) -> list[str]:
    """The reply's facts that no ground text (the article) contains, as shown."""
    allowed: set[str] = set()
    for text in grounds:
        allowed |= _keys(text)
    return list(dict.fromkeys(fact.shown for fact in facts(reply) if fact.key not in allowed))


def missing_facts(reply: str, article: str) -> list[str]:
    """The article's facts (numbers, addresses, brands, names) the reply does not state."""
    kept = _keys(reply)
    return [fact.shown for fact in facts(article) if fact.key not in kept]


def echoed_premises(reply: str, question: str, article: str) -> list[str]:
    """Words of the customer's question the reply repeats and the article does not have:
    what the reply affirms only because the customer said it ("We accept bitcoin")."""
    known = {_stem(word) for word in _WORD.findall(article.lower())}
    said = {_stem(word) for word in _WORD.findall(reply.lower())}
    echoed = [
        word
        for word in dict.fromkeys(_WORD.findall(question.lower()))
        if len(word) > 3 and word not in _PLAIN and not word.isdigit()
        and _stem(word) in said and _stem(word) not in known
    ]  # fmt: skip
    return echoed


def _stem(word: str) -> str:
    """A crude stem, enough to match "refunds" with "refund" and "shipping" with "shipped"."""
    for suffix in ("ing", "ies", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)][:6]
    return word[:6]
