"""Greetings, thanks and goodbyes in FAQ mode: a friendly line, not a hand-off.

"hi" matches no FAQ entry, so without this the bot answered a greeting with "I can't find an
answer ... shall I pass you to our support team?" and put it in the support team's hand-off
list. A message made only of such words gets a short reply of its own instead: no model call,
no sources, no hand-off. Anything with a question in it ("hi, where is my order?") goes on to
the FAQ as usual.
"""

import re

GREETING_REPLY = (
    "Hello! What can I help you with? I answer from our help articles, and I can pass you "
    "to a person at any time."
)
THANKS_REPLY = "You're welcome! Is there anything else I can help you with?"
GOODBYE_REPLY = "Goodbye, and thank you for getting in touch!"
ACK_REPLY = "Is there anything else I can help you with?"  # "ok", "great", "perfect"

_KINDS = {  # words and phrases of each kind; the later kinds win ("thanks, bye": goodbye)
    GREETING_REPLY: {"hi", "hello", "hey", "hiya", "howdy", "greetings", "good morning",
                     "good afternoon", "good evening", "morning"},
    THANKS_REPLY: {"thanks", "thank you", "thx", "ty", "cheers", "much appreciated",
                   "that helps", "that helped", "that was helpful", "very helpful"},
    GOODBYE_REPLY: {"bye", "goodbye", "bye bye", "see you", "see ya", "have a nice day",
                    "have a good day", "that is all", "that's all", "thats all",
                    "nothing else", "that's everything"},
}  # fmt: skip
# Words that may come with them without making the message a question.
_FILLER = {"ok", "okay", "great", "perfect", "awesome", "cool", "nice", "so", "much", "very",
           "a", "lot", "again", "there", "all", "everyone", "team", "guys", "folks", "and",
           "oh", "well", "many", "for", "your", "the", "help", "it", "you", "too", "then",
           "alright", "fine", "good", "wonderful", "brilliant", "super"}  # fmt: skip
# "no" may come with a goodbye ("no thanks, that's all"), never alone or with thanks only:
# "no" and "no thanks" answer the bot's "Did you mean ...?" (chatbot.faq.ask_back).
_DECLINING = {"no", "nope", "nah"}
MAX_WORDS = 8


def small_talk_reply(text: str) -> str | None:
    """The reply when the whole message is a greeting, thanks or goodbye; None otherwise."""
    words = re.findall(r"[a-z']+", text.lower())
    if not words or len(words) > MAX_WORDS:
        return None
    rest, reply = " ".join(words), None
    for kind, phrases in _KINDS.items():
        for phrase in sorted(phrases, key=len, reverse=True):  # "thank you" before "you"
            if re.search(rf"\b{re.escape(phrase)}\b", rest):
                rest = re.sub(rf"\b{re.escape(phrase)}\b", " ", rest)
                reply = kind
    allowed = _FILLER | _DECLINING if reply == GOODBYE_REPLY else _FILLER
    if any(word not in allowed for word in rest.split()):
        return None
    return reply or (ACK_REPLY if len(words) <= 3 else None)
