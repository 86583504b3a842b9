"""The bench's multi-turn sets stay readable and point at entries that exist: a renamed FAQ
entry would otherwise score as a wrong answer without anyone noticing."""

import pytest

from bench.faq_bench import DOMAINS, MULTITURN
from bench.faq_turns import multiturn
from chatbot.faq.load import load_knowledge_base

KINDS = {"question", "follow_up", "switch", "unrelated", "yes_no", "choice", "decline"}


@pytest.mark.parametrize("path", MULTITURN, ids=lambda path: path.stem)
def test_a_multi_turn_set_names_only_entries_of_its_knowledge_base(path):
    conversations = multiturn(path)
    assert conversations, f"{path} holds no conversation"
    for domain, found in conversations.items():
        ids = {entry.id for entry in load_knowledge_base(DOMAINS[domain][0]).entries}
        for conversation in found:
            turns = conversation["turns"]
            assert 3 <= len(turns) <= 5, conversation["id"]
            for turn in turns:
                assert turn["kind"] in KINDS and turn["message"].strip(), conversation["id"]
                assert turn["expected"] is None or turn["expected"] in ids, conversation["id"]
