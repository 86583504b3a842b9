"""Telling a follow-up ("Sundays too?") from a new question ("Tell me a joke").

A follow-up means little alone and is read with the customer's message before it. Reading every
short message that way pulled new, self-contained messages to the earlier topic: after "Can I
cancel my order?", "Tell me a joke" matched the cancellation article with full confidence. So
only messages that lean on what came before are read with it: ones that start by continuing
("and", "what about", "what if", "even", ...), and short ones that point back ("it", "that",
"there", "too", "instead", "extra", ...). Shortness alone is not leaning: "what's the weather"
after a question on payments repeated the payment answer when every message of three words or
fewer was read as a follow-up.
"""

import re

MAX_WORDS = 10  # longer messages say what they mean
_CONTINUES = re.compile(
    r"^\W*(?:and|or|but|also|so|then|plus|even|same|what about|how about|what if)\b", re.I
)
_POINTS_BACK = re.compile(
    r"\b(?:it|its|it's|that|this|they|them|those|these|there|one|ones|too|also|instead|"
    r"either|as well|extra)\b",
    re.I,
)


def looks_like_follow_up(text: str) -> bool:
    """True when the message leans on the one before it."""
    if len(text.split()) > MAX_WORDS:
        return False
    return bool(_CONTINUES.match(text) or _POINTS_BACK.search(text))
