"""Asking back and reading the answer: "Did you mean: 1. ... 2. ...?", then "2", "yes", "no".

When no entry is clearly the one (chatbot.faq.knowledge_base: the middle band), the bot lists
the closest entries' questions instead of answering, as Rasa's two-stage fallback does. The
customer's next message may pick one by number or position ("2", "the second one"), agree
("yes" when one was offered; to several, a "yes" is asked which one), decline ("no", "none of
those"), or name the entry in words; the policy (chatbot.faq.policy) handles the words. A
bare yes or no after a hand-off is read here too.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from chatbot.conversation.policy import Choice

_ORDINALS = {"first": 1, "second": 2, "third": 3, "1st": 1, "2nd": 2, "3rd": 3}
_CARDINALS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_YES = {"yes", "yeah", "yep", "yup", "sure", "correct", "exactly", "that one", "this one",
        "that s it", "yes that one", "y", "definitely", "absolutely", "that s right",
        "yes it is", "i do", "indeed"}  # fmt: skip
_NO = {"no", "nope", "nah", "none", "neither", "n", "none of them", "none of those",
       "none of these", "neither of them", "neither of those", "not really", "no thanks",
       "no thank you", "not those", "wrong", "none of the above", "no that s fine",
       "no that s ok", "no it s fine", "not at all", "no i don t", "no need"}  # fmt: skip
_FILLER = r"(?:\s+(?:please|thanks|thank you|pls))*"
_NUMBERED = re.compile(
    rf"^(?:(?:number|option|choice|no|#)\s*)?(\d+)(?:\s*(?:st|nd|rd|th))?(?:\s+one)?{_FILLER}$"
)
_POSITION = re.compile(
    r"^(?:(?:i\s+(?:mean|meant|want)|it s)\s+)?(?:the\s+)?(?:(?:number|option|choice)\s+)?"
    rf"(first|second|third|1st|2nd|3rd|last|one|two|three|four|five)"
    rf"(?:\s+(?:one|option|choice|question))?{_FILLER}$"
)
MAX_LISTED = 9  # "7" with three choices is out of range; "70" is not a pick at all


@dataclass(frozen=True)
class Pick:
    """What a short reply says: a choice (0-based `index`), out of range (`number`), yes, no."""

    kind: Literal["choice", "out_of_range", "yes", "no"]
    index: int = 0
    number: int = 0


def normalized(text: str) -> str:
    """Lowercase words and digits only: "The 2nd one, please!" -> "the 2nd one please"."""
    return " ".join(re.findall(r"[a-z0-9#]+", text.lower().replace("’", "'").replace("'", " ")))


def read_pick(text: str, count: int) -> Pick | None:
    """The pick a message makes among `count` choices; None when it is not one."""
    words = normalized(text)
    number = None
    if match := _NUMBERED.match(words):
        number = int(match.group(1))
        if number > MAX_LISTED:
            return None
    elif match := _POSITION.match(words):
        word = match.group(1)
        number = count if word == "last" else _ORDINALS.get(word) or _CARDINALS[word]
    if number is not None:
        return (
            Pick("choice", number - 1) if 1 <= number <= count else Pick("out_of_range", 0, number)
        )
    return yes_or_no(text)


def yes_or_no(text: str) -> Pick | None:
    """Pick("yes") or Pick("no") when the whole message is one, else None."""
    words = re.sub(rf"{_FILLER}$", "", normalized(text))
    words = re.sub(r"^(?:oh|well|um|hmm)\s+", "", words)
    if words in _YES or words in {f"{w} please" for w in _YES}:
        return Pick("yes")
    if words in _NO:
        return Pick("no")
    return None


def ask_back_text(choices: Sequence[Choice]) -> str:
    """The question the bot asks: the entries' own questions, numbered."""
    if len(choices) == 1:
        return (
            f"I want to be sure I understood. Did you mean: {choices[0].question} "
            'Answer "yes" and I will answer it, or "no" and I will pass you to a person.'
        )
    return f"I want to be sure I understood. Did you mean:\n{_numbered(choices)}"


def which_one_text(choices: Sequence[Choice]) -> str:
    """After a bare "yes" to several choices: which one? Taking the first would answer a
    question the customer may not have asked (a "yes" is often meant for something else)."""
    return f"Which one do you mean?\n{_numbered(choices)}"


def _numbered(choices: Sequence[Choice]) -> str:
    listed = "\n".join(f"{n}. {choice.question}" for n, choice in enumerate(choices, start=1))
    return (
        f'{listed}\n\nAnswer with the number (1-{len(choices)}), or "no" if none of them '
        "fits and I will pass you to a person."
    )


def out_of_range_text(number: int, choices: Sequence[Choice]) -> str:
    """The same choices again, after a number that is not among them."""
    return f"There is no choice {number}. " + ask_back_text(choices)


NO_CHOICES_OPEN = (
    "There is no list of choices open in this conversation right now. "
    "Please ask your question in words and I will look it up."
)
NOTHING_ASKED = "What can I help you with? Ask your question in words and I will look it up."
HANDOFF_CONFIRMED = (
    "Thank you. Our support team has your question and a person will reply here. "
    "Is there anything else I can help you with meanwhile?"
)
HANDOFF_WITHDRAWN = (
    "All right, I won't pass this one on. Is there anything else I can help you with?"
)
