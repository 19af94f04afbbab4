"""Settings shared by every test, including the notebooks that nbval runs.

Quick mode shrinks every training budget in the lessons and exercises, so the whole course
executes in minutes; the notebook kernels nbval starts inherit this environment.
"""

import os

os.environ.setdefault("LLMKIT_QUICK", "1")
# Widgets fall back to static figures when no browser is attached; nbval has none.
os.environ.setdefault("MPLBACKEND", "Agg")
