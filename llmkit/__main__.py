"""`python -m llmkit ...` (and the `llmkit` command): see llmkit.cli for the subcommands."""

import sys

from llmkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
