"""The web chat page in a real headless Chromium (Debian's, driven by Playwright): a customer
types a question, watches the reply grow, sees the cited help article, reloads the page and
finds the conversation again. What they type is shown as text, never run as HTML."""

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


@pytest.fixture(scope="module")
def server(real_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-page")
    args = ("--model", str(real_model), "--faq", str(STORE_FAQ), "--max-tokens", "40")
    with running_server(folder, *args) as s:
        yield s


def test_customer_chats_sees_the_article_and_finds_it_after_reload(browser, server):
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    page.goto(server.url)
    page.evaluate(WATCH_REPLY)
    question = "How long does it take to get my refund?"
    page.fill("#message", question)
    page.click("#send")
    source = page.wait_for_selector(".msg.assistant .source", timeout=60_000)
    assert "How long does it take to get my refund?" in source.text_content()
    reply = page.text_content(".msg.assistant .text")
    lengths = page.evaluate("window.replyLengths")
    assert reply.strip() and lengths[-1] == len(reply)
    assert len({n for n in lengths if 0 < n < len(reply)}) >= 2  # it grew, piece by piece
    page.wait_for_function("() => !document.querySelector('#send').disabled")

    typed = '<img src=x onerror="document.title=`pwned`"> do you ship abroad?'
    page.fill("#message", typed)
    page.press("#message", "Enter")
    page.wait_for_function("() => document.querySelectorAll('.msg.assistant').length == 2")
    page.wait_for_function("() => !document.querySelector('#send').disabled", timeout=60_000)
    assert page.text_content(".msg.user:nth-of-type(3) .text") == typed
    assert page.query_selector("#log img") is None and page.title() != "pwned"

    shown = page.eval_on_selector_all(".msg .text", "nodes => nodes.map(n => n.textContent)")
    page.reload()
    page.wait_for_selector(".msg.assistant .source")
    again = page.eval_on_selector_all(".msg .text", "nodes => nodes.map(n => n.textContent)")
    assert again == shown and len(again) == 4
    token = page.evaluate("localStorage.getItem('chatbot.conversation')")
    store = server.store()
    try:
        saved = store.messages(store.conversation_for_token(token))
    finally:
        store.close()
    assert [m.content for m in saved] == shown
    page.close()
