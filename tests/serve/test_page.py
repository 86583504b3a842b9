"""The web chat page in a real headless Chromium (Debian's, driven by Playwright), phone-sized:
a customer types a question, watches the reply grow, sees the cited help article and a hand-off,
reloads the page and finds the conversation again. What they type is shown as text, never run
as HTML. The reply grows on a plain chat server: in FAQ mode the bot checks a reply against its
article before showing it (chatbot.faq.policy), so it arrives whole."""

import shutil
from pathlib import Path

import pytest

from tests.serve.conftest import STORE_FAQ, running_server

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download cannot work offline: it drives the system Chromium.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Records every length the newest reply's text had, as the page changes.
WATCH_REPLY = """() => {
    window.replyLengths = [];
    const log = document.getElementById('log');
    new MutationObserver(() => {
        const replies = log.querySelectorAll('.msg.assistant .text');
        if (replies.length) {
            window.replyLengths.push(replies[replies.length - 1].textContent.length);
        }
    }).observe(log, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed: run `make browser` (as root)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    page.goto(server.url)
    page.evaluate(WATCH_REPLY)
    return page


def ask(page, text: str, press_enter: bool = False) -> None:
    """Type a message and send it; return once the reply is complete (Send is enabled again)."""
    page.fill("#message", text)
    if press_enter:
        page.press("#message", "Enter")
    else:
        page.click("#send")
    page.wait_for_function("() => document.querySelector('.msg.assistant:last-child')")
    page.wait_for_function("() => !document.querySelector('#send').disabled", timeout=60_000)


def shown(page) -> list[str]:
    return page.eval_on_selector_all(".msg .text", "nodes => nodes.map(n => n.textContent)")


def saved(server, page) -> list[str]:
    """The conversation the page's stored id opens, as saved."""
    token = page.evaluate("() => localStorage.getItem('chatbot.conversation')")
    store = server.store()
    try:
        return [m.content for m in store.messages(store.conversation_for_token(token))]
    finally:
        store.close()


@pytest.fixture(scope="module")
def chat_server(real_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-page-chat")
    with running_server(folder, "--model", str(real_model), "--max-tokens", "40") as s:
        yield s


@pytest.fixture(scope="module")
def faq_server(real_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-page-faq")
    args = ("--model", str(real_model), "--faq", str(STORE_FAQ), "--max-tokens", "40")
    with running_server(folder, *args) as s:
        yield s


def test_reply_grows_as_it_streams_and_the_conversation_survives_a_reload(browser, chat_server):
    page = open_page(browser, chat_server)
    ask(page, "Count from 1 to 30, separated by commas.")  # a reply of many pieces
    reply = page.text_content(".msg.assistant .text")
    lengths = page.evaluate("() => window.replyLengths")
    assert reply.strip() and lengths[-1] == len(reply)
    assert len({n for n in lengths if 0 < n < len(reply)}) >= 2  # it grew, piece by piece

    typed = '<img src=x onerror="document.title=`pwned`"> and about rivers?'
    ask(page, typed, press_enter=True)
    assert shown(page)[2] == typed  # shown as typed, as text
    assert page.query_selector("#log img") is None and page.title() != "pwned"

    before = shown(page)
    page.reload()
    page.wait_for_selector(".msg.assistant")
    assert shown(page) == before and len(before) == 4
    assert saved(chat_server, page) == before
    page.close()


def test_faq_reply_shows_its_article_and_a_handoff_and_both_survive_a_reload(browser, faq_server):
    page = open_page(browser, faq_server)
    ask(page, "How long does it take to get my refund?")
    source = page.text_content(".msg.assistant .source summary")
    assert "How long does it take to get my refund?" in source
    ask(page, "I want to talk to a real person")
    assert "support team" in page.text_content(".msg.assistant:last-child .handoff")

    before = shown(page)
    page.reload()
    page.wait_for_selector(".msg.assistant .handoff")
    assert shown(page) == before and len(before) == 4
    assert "How long does it take" in page.text_content(".msg.assistant .source summary")
    assert saved(faq_server, page) == before
    page.close()


def test_a_persons_reply_to_a_handoff_reaches_the_open_page(browser, faq_server):
    """After a hand-off the page asks for the conversation every 15 s (the page's clock is
    Playwright's, run forward); a person's reply shows up marked as theirs, and once only."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.clock.install()
    page.goto(faq_server.url)
    ask(page, "I want to talk to a real person")
    store = faq_server.store()
    try:
        handoff = store.handoffs()[0]
        store.resolve_handoff(handoff.message_id, "Hi, this is Sam from the team: <b>hello</b>")
    finally:
        store.close()
    page.clock.run_for(16_000)
    page.wait_for_selector(".msg.person")
    assert page.text_content(".msg.person .from") == "Support team"
    assert shown(page)[-1] == "Hi, this is Sam from the team: <b>hello</b>"  # text, not HTML
    page.clock.run_for(60_000)  # no more asking, nothing shown twice
    assert len(page.query_selector_all(".msg.person")) == 1
    page.reload()
    page.wait_for_selector(".msg.person")
    assert shown(page)[-1] == "Hi, this is Sam from the team: <b>hello</b>"
    assert len(page.query_selector_all(".msg.person")) == 1
    page.close()
