"""`python -m chatbot.cli`, as the `chatbot` command."""

import sys

from chatbot.cli.commands import main

sys.exit(main())
