"""`python -m converter` runs the same CLI as the `converter` script."""

import sys

from converter.cli.commands import main

sys.exit(main())
