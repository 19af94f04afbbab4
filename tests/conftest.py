"""Test collection settings for tests/."""

# The browser test opens this notebook in JupyterLab itself; nbval must not run it.
collect_ignore_glob = ["browser/*.ipynb"]
