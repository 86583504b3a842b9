"""A small knowledge base in another domain (a company IT helpdesk), with customer questions.

Written apart from the store FAQ, and never used to choose the retrieval's settings, so that
retrieving correctly from it shows nothing is tuned to the sample knowledge base.
"""

ENTRIES = [
    {
        "id": "vpn-connect",
        "category": "network",
        "question": "How do I connect to the VPN from home?",
        "answer": "Install GlobalProtect from the Software Center, sign in with your staff ID, "
        "and choose the portal vpn.acme.example. Approve the push notification in Authenticator.",
        "alternates": ["Remote access setup", "Working from home network access"],
    },
    {
        "id": "password-expiry",
        "category": "accounts",
        "question": "How often do I have to change my password?",
        "answer": "Staff passwords expire every 90 days. You get a reminder email 14 days "
        "before; change it at password.acme.example. It needs at least 14 characters.",
        "alternates": ["Password expiration policy", "My password expired"],
    },
    {
        "id": "printer-setup",
        "category": "hardware",
        "question": "How do I add a network printer?",
        "answer": "Open Settings > Printers, choose Add, and pick the printer named after "
        "your floor, for example FL3-MFP. Print jobs are released with your badge at the device.",
        "alternates": ["Printer not showing up", "Set up printing on my laptop"],
    },
    {
        "id": "laptop-replacement",
        "category": "hardware",
        "question": "When is my laptop due for replacement?",
        "answer": "Laptops are replaced every 4 years. The IT asset team emails you 30 days "
        "before; a broken laptop is replaced sooner after the service desk inspects it.",
        "alternates": ["Laptop refresh cycle", "Can I get a new computer?"],
    },
    {
        "id": "mfa-new-phone",
        "category": "accounts",
        "question": "I got a new phone. How do I move my two-factor authentication?",
        "answer": "Before wiping the old phone, open mysignins.acme.example and add the new "
        "phone as a sign-in method. If the old phone is gone, call the service desk on ext. 4357.",
        "alternates": ["Authenticator app on a new device", "Lost my MFA phone"],
    },
    {
        "id": "software-request",
        "category": "software",
        "question": "How do I request software that is not in the Software Center?",
        "answer": "Raise a software request in the IT portal with a business reason and your "
        "manager's approval. Licensed software takes about 5 business days to be approved.",
        "alternates": ["Install a program I need", "I need an application for my work"],
    },
    {
        "id": "shared-mailbox",
        "category": "email",
        "question": "How do I get access to a shared mailbox?",
        "answer": "The mailbox owner approves access in the IT portal under Access requests. "
        "It appears in Outlook within 2 hours after approval; restart Outlook if not.",
        "alternates": ["Team inbox permissions", "Open a group mailbox in Outlook"],
    },
    {
        "id": "wifi-guest",
        "category": "network",
        "question": "How can visitors get on the Wi-Fi?",
        "answer": "Visitors use the ACME-Guest network. Reception prints a voucher that is "
        "valid for 24 hours; staff devices must use ACME-Corp instead.",
        "alternates": ["Guest wireless password", "Internet access for visitors"],
    },
    {
        "id": "phishing-report",
        "category": "security",
        "question": "What should I do with a suspicious email?",
        "answer": "Do not click links or open attachments. Use the Report Phishing button in "
        "Outlook; the security team reviews every report within 1 business day.",
        "alternates": ["Report a phishing message", "I think I got a scam email"],
    },
    {
        "id": "file-restore",
        "category": "storage",
        "question": "Can I get back a file I deleted?",
        "answer": "Files on OneDrive and team sites stay in the recycle bin for 93 days; "
        "restore them there yourself. Older files can be restored from backup by the service desk.",
        "alternates": ["Recover a deleted document", "Undo deleting a file"],
    },
    {
        "id": "service-desk-hours",
        "category": "contact",
        "question": "When is the IT service desk open?",
        "answer": "The service desk answers on ext. 4357 from 7 am to 7 pm, Monday to Friday. "
        "Outside those hours, urgent outages go to the on-call engineer through the same number.",
        "alternates": ["IT support phone number", "Who do I call for computer problems?"],
    },
    {
        "id": "monitor-request",
        "category": "hardware",
        "question": "Can I get a second monitor?",
        "answer": "Yes. Every staff member may have two monitors. Order one in the IT portal "
        "under Hardware; desk delivery takes about 3 business days.",
        "alternates": ["Extra screen for my desk", "Order a display"],
    },
]

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
