"""The three bands in a conversation: ask back, read the pick, hand off; the store keeps it all.

Real components: the store FAQ with its measured thresholds, a real SQLite store, and a Session
over llama.cpp (a tiny random model: in `quote` answer mode the FAQ bot never calls it, so the
answers are the articles' own text and every assertion is exact).
"""

import pytest

from chatbot.conversation.policy import AskModel
from chatbot.conversation.session import Session, TurnResult, model_history
from chatbot.engines.llama import LlamaEngine
from chatbot.errors import ChatbotError
from chatbot.faq.ask_back import Pick, read_pick
from chatbot.faq.policy import FaqPolicy, quoted_answer
from chatbot.store.store import Store
from tests.chatbot.tiny_gguf import build_tiny_chat_gguf

ASKS_BACK = "help with my order"  # three order entries score alike: the middle band


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = build_tiny_chat_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
    loaded = LlamaEngine(path, n_ctx=2048, n_threads=1)
    yield loaded
    loaded.close()


@pytest.fixture
def store(tmp_path):
    opened = Store(tmp_path / "chat.db")
    yield opened
    opened.close()


@pytest.fixture
def chat(engine, store, store_kb):
    """A new conversation with the FAQ bot answering by quoting (no model call)."""

    def new(mode: str = "quote") -> Session:
        return Session(engine, store, policy=FaqPolicy(store_kb, mode))

    return new


def say(session: Session, text: str) -> TurnResult:
    return [i for i in session.send(text) if isinstance(i, TurnResult)][0]


def best_entry(result: TurnResult) -> str | None:
    """The entry a turn answered from, or else the first it offered when asking back."""
    ids = [*result.sources, *(choice.id for choice in result.clarify)]
    return ids[0] if ids else None


@pytest.mark.parametrize(
    ("text", "pick"),
    [
        ("2", Pick("choice", 1)),
        ("2.", Pick("choice", 1)),
        ("the second one", Pick("choice", 1)),
        ("The 3rd one, please!", Pick("choice", 2)),
        ("option 1", Pick("choice", 0)),
        ("first", Pick("choice", 0)),
        ("the last one", Pick("choice", 2)),
        ("yes", Pick("yes")),
        ("Yes please", Pick("yes")),
        ("no", Pick("no")),
        ("None of those", Pick("no")),
        ("no thanks", Pick("no")),
        ("7", Pick("out_of_range", 0, 7)),
        ("70", None),
        ("no, how do I return a gift?", None),
        ("how do I track it", None),
    ],
)
def test_reading_a_pick_among_three(text, pick):
    assert read_pick(text, 3) == pick


def test_ask_back_then_a_number_answers_that_entry(chat, store, store_kb):
    session = chat()
    asked = say(session, ASKS_BACK)
    assert asked.band == "ask_back" and asked.stats is None  # no model call
    assert len(asked.clarify) == 3 and not asked.handoff and asked.sources == ()
    lines = asked.answer.splitlines()
    for n, choice in enumerate(asked.clarify, start=1):
        assert f"{n}. {choice.question}" in lines
    saved = store.messages(session.conversation_id)[-1]
    assert saved.band == "ask_back" and saved.choices == tuple(c.id for c in asked.clarify)

    picked = say(session, "2")
    chosen = asked.clarify[1].id
    assert picked.band == "answer" and picked.sources == (chosen,)
    assert picked.answer == quoted_answer(store_kb.entry(chosen))
    ask_back = store.messages(session.conversation_id)[1]
    assert (ask_back.outcome, ask_back.choice) == ("picked", chosen)
    counts = store.faq_counts()
    assert (counts.asked_back, counts.picked, counts.answered, counts.quoted) == (1, 1, 1, 1)


def test_a_follow_up_leans_on_the_picked_entry_not_on_small_talk(chat):
    """After a pick ("2") and a "thanks", a follow-up is read with the picked entry's
    question: "2" and "thanks" say nothing about what "report it" refers to."""
    session = chat()
    asked = say(session, ASKS_BACK)
    assert asked.clarify[1].id == "order-missing-item"
    say(session, "2")
    assert say(session, "thanks").band == "small_talk"
    follow_up = say(session, "and how long do I have to report it?")
    assert best_entry(follow_up) == "order-missing-item"  # answered, or first of the choices
    alone = say(chat(), "and how long do I have to report it?")
    assert best_entry(alone) != "order-missing-item", "alone, it is not that entry's question"


def test_a_pick_in_words_and_yes(chat):
    session = chat()
    asked = say(session, ASKS_BACK)
    missing = next(c for c in asked.clarify if c.id == "order-missing-item")
    assert say(session, "the one about an item missing from my box").sources == (missing.id,)
    session = chat()
    asked = say(session, ASKS_BACK)
    # "yes" to several choices says none of them: asked which one, not answered the first.
    which = say(session, "yes")
    assert which.band == "ask_again" and which.answer.startswith("Which one do you mean?")
    assert [c.id for c in which.clarify] == [c.id for c in asked.clarify] and not which.sources
    assert say(session, "1").sources == (asked.clarify[0].id,)


def test_the_one_about_an_entry_not_offered_is_a_new_question(chat, store):
    """ "the one about X" picks among the choices unless an entry not offered answers X
    outright: "card stuff", then "the one about my card being declined" got the PIN entry."""
    session = chat()
    asked = say(session, ASKS_BACK)
    assert "order-cancel" not in [c.id for c in asked.clarify]
    new = say(session, "the one about cancelling my order")  # not a pick: a new question
    assert new.band in ("answer", "ask_back") and best_entry(new) == "order-cancel"
    assert store.messages(session.conversation_id)[1].outcome == "new_question"
    session = chat()
    say(session, ASKS_BACK)  # matched best by a delivery entry, but not outright: a pick
    assert say(session, "the one about tracking my parcel").sources == ("order-tracking",)


def test_a_goodbye_with_no_in_it_ends_politely_after_an_answer(chat, store):
    session = chat()
    say(session, ASKS_BACK)
    say(session, "1")
    closing = say(session, "no thanks, that's all")  # was read with "1" and asked back
    assert closing.band == "small_talk" and not closing.handoff and store.handoffs() == []


def test_no_hands_off_and_the_outcome_is_kept(chat, store, store_kb):
    session = chat()
    say(session, ASKS_BACK)
    declined = say(session, "none of those")
    assert declined.handoff and declined.answer == store_kb.handoff_reply
    assert store.messages(session.conversation_id)[1].outcome == "declined"
    # the support team sees what the customer asked, and that they declined the choices
    assert [(h.question, h.reply) for h in store.handoffs()] == [(ASKS_BACK, "none of those")]
    assert store.faq_counts().declined == 1


def test_a_persons_reply_to_a_handoff_resolves_it_and_stays_out_of_the_prompt(chat, store):
    session = chat()
    say(session, ASKS_BACK)
    say(session, "none of those")
    handoff = store.handoffs()[0]
    with pytest.raises(ChatbotError, match="the reply is empty"):
        store.resolve_handoff(handoff.message_id, "  ")
    assert store.handoffs()[0].resolved_at is None  # nothing half done
    done = store.resolve_handoff(handoff.message_id, "Hi, Sam here: which order is it?")
    assert done.resolved_at is not None
    last = store.messages(session.conversation_id)[-1]
    assert last.from_person and last.content == "Hi, Sam here: which order is it?"
    assert say(session, "1").band == "choice_help"  # the bot's own turns go on as before
    history = store.messages(session.conversation_id)
    assert last.id not in [m.id for m in model_history(history)]


def test_out_of_range_asks_again_and_nothing_is_lost(chat, store):
    session = chat()
    asked = say(session, ASKS_BACK)
    again = say(session, "7")
    assert again.band == "ask_again" and again.clarify == asked.clarify
    assert again.answer.startswith("There is no choice 7.")
    assert say(session, "1").sources == (asked.clarify[0].id,)
    saved = store.messages(session.conversation_id)
    assert [m.content for m in saved if m.role == "user"] == [ASKS_BACK, "7", "1"]
    assert saved[1].outcome == "picked" and store.faq_counts().asked_back == 1


def test_a_middle_band_message_after_an_ask_back_is_handed_off(chat, store):
    session = chat()
    say(session, ASKS_BACK)
    # Read with the question asked back, still unclear among the same entries: then a person.
    again = say(session, "and if it's lost?")
    assert again.handoff
    assert store.messages(session.conversation_id)[1].outcome == "handoff"
    session = chat()
    asked = say(session, ASKS_BACK)
    other = say(session, "account help")  # unclear, but about other entries: a new question
    assert other.band == "ask_back" and other.clarify[0].id.startswith("account-")
    assert not {c.id for c in other.clarify} & {c.id for c in asked.clarify}
    assert store.messages(session.conversation_id)[1].outcome == "new_question"
    assert say(session, "1").sources == (other.clarify[0].id,)  # the new choices are open
    session = chat()
    say(session, ASKS_BACK)
    new = say(session, "Do you deliver on Saturdays?")  # a clear new question is answered
    assert new.sources == ("shipping-weekend",)
    assert store.messages(session.conversation_id)[1].outcome == "new_question"


def test_a_new_question_near_a_choice_is_not_taken_as_picking_it(chat, store):
    """ "by fax?" matches the tracking choice best, but that entry does not answer it: no
    pick, and as the same unclear question again, a person. Words the entry answers outright
    still pick it."""
    session = chat()
    asked = say(session, ASKS_BACK)
    assert "order-tracking" in [c.id for c in asked.clarify]
    fax = say(session, "can I get the tracking number by fax?")
    assert fax.handoff and fax.sources == ()
    assert store.messages(session.conversation_id)[1].outcome == "handoff"
    session = chat()
    say(session, ASKS_BACK)
    assert say(session, "change items").sources == ("order-edit-items",)
    assert store.messages(session.conversation_id)[1].outcome == "picked"


def test_a_choice_with_no_ask_back_open_gets_a_clear_reply(chat, store):
    session = chat()
    reply = say(session, "2")
    assert reply.band == "choice_help" and "no list of choices open" in reply.answer
    assert not reply.handoff and store.handoffs() == []
    # In another conversation, the pick does not reach the first one's ask-back.
    first = chat()
    say(first, ASKS_BACK)
    other = chat()
    assert say(other, "1").band == "choice_help"
    assert store.messages(first.conversation_id)[-1].band == "ask_back"  # still open
    with pytest.raises(ChatbotError, match="the message is empty"):
        say(first, "   ")
    assert len(store.messages(first.conversation_id)) == 2  # nothing saved, nothing lost


def test_yes_or_no_after_a_handoff_is_answered_not_looked_up(chat, store, store_kb):
    session = chat()
    assert say(session, "What's the weather like in Portland tomorrow?").handoff
    confirmed = say(session, "yes")
    assert confirmed.band == "handoff_reply" and not confirmed.handoff
    session = chat()
    say(session, "Can I rent a tent for the weekend?")
    withdrawn = say(session, "no thanks")
    assert withdrawn.band == "handoff_reply" and "won't pass this one on" in withdrawn.answer
    handoff = store.messages(session.conversation_id)[1]
    assert handoff.outcome == "declined" and store.handoffs(unresolved=True)[0].message_id != (
        handoff.id
    )
    assert store.faq_counts().handoffs_declined == 1


def test_a_short_unrelated_message_is_not_read_with_the_one_before(chat):
    session = chat()
    assert say(session, "Which payment methods do you accept?").sources == ("payment-methods",)
    assert say(session, "what's the weather").handoff


def test_the_check_quotes_the_article_in_auto_mode(store_kb):
    article = store_kb.entry("payment-methods")
    asked = AskModel(
        "prompt", ("payment-methods",), (article.answer,), band="answer",
        asked="can I pay with bitcoin?",
    )  # fmt: skip
    auto, generate = FaqPolicy(store_kb, "auto"), FaqPolicy(store_kb, "generate")
    made_up = "We accept Bitcoin, Likesum, and other cryptocurrencies."
    checked = auto.check(made_up, asked, repeated=False)
    assert (checked.text, checked.quoted) == (quoted_answer(article), "fact_check")
    assert generate.check(made_up, asked, False).unsupported == ("Bitcoin", "Likesum")
    # The customer's word, repeated, is no ground either.
    assert auto.check("Yes, you can pay with bitcoin.", asked, False).quoted == "fact_check"
    faithful = article.answer
    assert auto.check(faithful, asked, repeated=False).text == faithful
    assert auto.check(faithful, asked, repeated=True).quoted == "repetition"
    assert auto.check("We accept Visa and PayPal.", asked, False).quoted == "dropped_facts"
    looping = faithful + "".join(f"\n{n}. Click the Pay button." for n in range(1, 5))
    assert auto.check(looping, asked, repeated=False).quoted == "repetition"
    rambling = faithful + " We value every customer and thank you for shopping with us." * 9
    assert auto.check(rambling, asked, repeated=False).quoted == "too_long"


def test_a_bad_answer_mode_is_one_clear_error(store_kb):
    with pytest.raises(ChatbotError, match="--faq-answer must be one of generate, quote, auto"):
        FaqPolicy(store_kb, "always")
