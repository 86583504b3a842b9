"""Noticing a customer who asks for a person: such a message is handed off at once.

"I want to talk to a human" shares words with the contact entries of most FAQs, and a small
model answering from them has replied "I'm a human service professional". A customer who asks
for a person gets one, whatever the FAQ says. Only clear requests count: someone to talk to
(human, person, agent, representative, operator, ...) after a verb of reaching them, or a
message that is nothing but that word. "Is there an email address for customer service?" is a
question for the FAQ, not a request.
"""

import re

_WHO = (
    r"(?:a\s+|an\s+|the\s+|some\s*one\s+|somebody\s+)?(?:real\s+|live\s+|actual\s+)?"
    r"(?:human(?:\s+being)?|person|people|agent|representative|rep|operator|staff\s+member|"
    r"support\s+agent|customer\s+service(?:\s+agent|\s+rep(?:resentative)?)?|supervisor|manager)"
)
_REACH = (
    r"(?:talk|speak|chat|connect|transfer|put\s+me\s+through|pass\s+me|get\s+me|"
    r"let\s+me\s+(?:talk|speak)|want|need|give\s+me|reach)"
)
# A verb of reaching, then within a few words the one to reach: "can I speak to a real person".
# Someone of the customer's own ("my manager", "a colleague's") or a thing of theirs ("the
# agent's number") is not a request for ours: no possessive in between or after.
_POSSESSIVE = r"(?:my|our|his|her|their|its)"
_REQUEST = re.compile(
    rf"\b{_REACH}\b(?:\W+(?!{_POSSESSIVE}\b)\w+){{0,3}}?\W+{_WHO}\b(?!['\u2019]s\b)",
    re.IGNORECASE,
)
# "Can I talk to someone?": anyone at all, but only to talk to ("want someone to pick it up"
# is not a request).
_ANYONE = re.compile(
    r"\b(?:talk|speak|chat)\s+(?:to|with)\s+(?:some\s*one|somebody|any\s*one|anybody)\b",
    re.IGNORECASE,
)
# The whole message is the one to reach: "agent", "human please", "a real person!".
_BARE = re.compile(rf"^\W*{_WHO}(?:\W+please)?\W*$", re.IGNORECASE)


def asks_for_a_person(text: str) -> bool:
    """True when the message asks to be put through to a person."""
    return bool(_BARE.match(text) or _REQUEST.search(text) or _ANYONE.search(text))
