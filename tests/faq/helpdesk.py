"""A small knowledge base in another domain (a company IT helpdesk), with customer questions.

The entries live in data/faq/helpdesk_faq.jsonl and were written apart from the store FAQ; the
questions here were never used to choose the retrieval's settings, so retrieving correctly with
them shows nothing is tuned to the sample knowledge base. (The larger question set on the same
entries, data/eval/helpdesk_eval.jsonl, is the bench's second domain.)
"""

import json
from pathlib import Path

HELPDESK_FAQ = Path(__file__).resolve().parents[2] / "data/faq/helpdesk_faq.jsonl"
ENTRIES = [json.loads(line) for line in HELPDESK_FAQ.read_text().splitlines() if line.strip()]

# (question in the customer's words, expected id); written to differ from the entries' wording.
COVERED = [
    ("I'm working remotely today, how do I get onto the company network?", "vpn-connect"),
    ("GlobalProtect keeps asking me which portal to use", "vpn-connect"),
    ("My login stopped working because it's been three months, what now?", "password-expiry"),
    ("How long is my password valid for?", "password-expiry"),
    ("The office printer doesn't appear on my computer", "printer-setup"),
    ("How can I print from my new laptop?", "printer-setup"),
    ("My notebook is five years old, do I get a newer one?", "laptop-replacement"),
    ("I switched mobiles and the authenticator codes are on the old one", "mfa-new-phone"),
    ("I need Photoshop installed, how do I ask for it?", "software-request"),
    ("How can I see the sales team inbox in Outlook?", "shared-mailbox"),
    ("A client is coming to our office, how do they get internet?", "wifi-guest"),
    ("I received a weird message asking me to confirm my bank details", "phishing-report"),
    ("I accidentally removed a spreadsheet from OneDrive, can it be recovered?", "file-restore"),
    ("What time does IT support close on weekdays?", "service-desk-hours"),
    ("Is it possible to have two screens at my workstation?", "monitor-request"),
]

UNCOVERED = [
    "How many vacation days do I have left this year?",
    "Where is the cafeteria menu for this week?",
    "Can I bring my dog to the office?",
    "How do I submit my travel expenses?",
    "What is the dress code on Fridays?",
    "Who won the league title last season?",
]
