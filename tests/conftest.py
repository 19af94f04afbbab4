"""Test collection settings for tests/."""

import sys
from pathlib import Path

# The browser tests share one helper module, tests/browser/lab_driver.py (tests/ is not a
# package): make it importable as `lab_driver`.
sys.path.insert(0, str(Path(__file__).parent / "browser"))

# The browser test opens this notebook in JupyterLab itself; nbval must not run it.
collect_ignore_glob = ["browser/*.ipynb"]
