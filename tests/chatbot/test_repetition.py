"""The repetition guard: a reply that repeats itself is stopped and kept up to the repeat."""

from chatbot.conversation.repetition import MIN_REPEAT_CHARS, RepetitionGuard

SENTENCE = "If you have a return policy, you can return items within 30 days of delivery. "


def feed(guard: RepetitionGuard, text: str, size: int = 3) -> int | None:
    """Stream `text` in small pieces; the length fed when the guard first fired, else None."""
    for end in range(size, len(text) + size, size):
        if guard.add(text[end - size : end]):
            return end
    return None


def test_a_repeated_sentence_is_caught_as_soon_as_it_repeats_and_cut_off():
    guard = RepetitionGuard()
    fired = feed(guard, "Thanks for asking. " + SENTENCE * 4)
    assert fired is not None
    assert fired <= len("Thanks for asking. " + SENTENCE) + MIN_REPEAT_CHARS + 3
    assert guard.kept() == "Thanks for asking. " + SENTENCE.rstrip()


def test_prose_with_short_repeats_runs_to_the_end():
    text = (
        "Standard shipping costs $5.95. Express shipping costs $14.95. Standard shipping is "
        "free over $50, and Express shipping is free over $150. Your order ships in 1-2 days."
    )
    guard = RepetitionGuard()
    assert feed(guard, text) is None
    assert not guard.looping and guard.kept() == text


def test_a_loop_shorter_than_the_window_is_caught_once_it_fills_it():
    guard = RepetitionGuard()
    assert feed(guard, "ha " * 60) is not None
    assert guard.kept() == "ha"  # the first period of the loop


def test_a_cut_in_mid_sentence_moves_back_to_the_last_sentence_end():
    text = (
        "In Egypt, bread was a symbol of life. They would eat bread with honey and figs.\n\n"
        "In Rome, bread was a symbol of the empire. They would eat bread with honey and figs "
        "and would also eat bread with a piece of cheese."
    )
    guard = RepetitionGuard(min_chars=30)
    assert feed(guard, text) is not None
    assert guard.kept().endswith("In Rome, bread was a symbol of the empire.")
