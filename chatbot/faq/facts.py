"""Checking a grounded reply against its article: the numbers, addresses and brands it makes up.

A small model rewriting a help article keeps most of its facts but also invents some ("3 weeks"
where the article says "3 business days", "FedEx" where it says "UPS"). Numbers, email and web
addresses and brand names are what a customer acts on, and a reply can only have them from the
article, the customer's own messages, or thin air; so each one the reply states that none of
those contain is reported, and the app shows the article's own words beside the reply.
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
    return keys | {key.split(" ")[0] for key in keys}


def unsupported_facts(reply: str, grounds: Iterable[str]) -> list[str]:
    """The reply's facts that no ground text (article, customer messages) contains, as shown."""
    allowed: set[str] = set()
    for text in grounds:
        allowed |= _keys(text)
    return list(dict.fromkeys(fact.shown for fact in facts(reply) if fact.key not in allowed))
