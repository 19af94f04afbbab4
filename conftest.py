"""Settings shared by every test, including the notebooks that nbval runs.

Quick mode shrinks every training budget in the lessons and exercises, so the whole course
executes in minutes; the notebook kernels nbval starts inherit this environment.
"""

import os

os.environ.setdefault("LLMKIT_QUICK", "1")
# Notebooks executed by nbval have no browser attached: their views draw static figures
# (a live FigureWidget would carry plotly's 4 MB of JavaScript into every saved output).
# The browser test removes this setting for the JupyterLab it drives.
os.environ.setdefault("LLMKIT_STATIC", "1")

# The solution notebooks run once, in tests/test_grading.py, with every check strict (a wrong
# answer raises there); nbval runs the student notebooks, whose tasks are stubs.
collect_ignore_glob = ["exercises/source/*.ipynb"]
