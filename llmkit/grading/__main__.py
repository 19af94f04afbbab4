"""`python -m llmkit.grading PATH...`: the same as `python -m llmkit grade PATH...`."""

import sys

from llmkit.grading.cli import main

sys.exit(main())
