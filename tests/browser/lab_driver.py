"""Drive a real JupyterLab in headless Chromium: start a private server, run a notebook,
and find each cell's rendered output. Used by tests/test_browser.py.

Everything stays offline and private: the server listens on 127.0.0.1 with a random
token, Jupyter's config/data/runtime folders live in a temporary folder (so no user
settings or workspaces leak in), and the kernel is the Python running the tests.
The browser is Debian's `chromium`, driven by Playwright through `executable_path`
(Playwright's own browser download would need the internet).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("LLMKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# Lab settings for a quiet, fully rendered page: no news/update toasts over the outputs,
# and every cell kept in the DOM (JupyterLab 4 otherwise virtualises off-screen cells).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def chromium_path() -> str:
    """The Chromium executable, or a clear failure telling how to install it."""
    found = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if found is None:
        raise FileNotFoundError(
            f"Chromium not found at {CHROMIUM}. The browser test needs Debian's chromium: "
            "run `apt-get install chromium` (or set LLMKIT_CHROMIUM to its path)."
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_private_jupyter_dirs(home: Path) -> dict:
    env = dict(os.environ)
    for name in ("config", "data", "runtime"):
        (home / name).mkdir(parents=True, exist_ok=True)
        env[f"JUPYTER_{name.upper()}_DIR"] = str(home / name)
    env.pop("LLMKIT_STATIC", None)  # the point is to see the live widgets
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    # A kernelspec that names this interpreter, found before any system-wide "python3".
    kernel = home / "data" / "kernels" / "python3"
    kernel.mkdir(parents=True, exist_ok=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (llmkit)", "language": "python"}))
    for relative, values in LAB_SETTINGS.items():
        path = home / "config" / "lab" / "user-settings" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return env


@contextmanager
def jupyterlab_server(root: Path, home: Path, timeout: float = 60.0):
    """Start `jupyter lab` serving `root`; yield its base URL (with no token) and the token."""
    env = _write_private_jupyter_dirs(home)
    port, token = free_port(), secrets.token_hex(16)
    log = open(home / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.port_retries=0"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                log_text = (home / "jupyterlab.log").read_text()
                raise RuntimeError(f"jupyter lab exited early:\n{log_text}")
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s")
                time.sleep(0.3)
        yield url, token
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # our own process group: server and kernels
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


# JavaScript run in the page. The notebook panel is jupyterapp.shell.currentWidget.
KERNEL_IDLE_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
                 && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && panel.content.widgets.length > 0;
}"""

# The execution count of every code cell, from the notebook's model (a cell whose input is
# hidden, e.g. a worked solution, shows an empty placeholder prompt in the page).
EXECUTION_COUNTS_JS = """() => window.jupyterapp.shell.currentWidget.content.widgets
  .filter(cell => cell.model.type === 'code').map(cell => cell.model.executionCount)"""

# Done when the kernel is idle, no cell is queued and every code cell has run, or when a
# cell failed (the run stops there, leaving the later cells unrun, so waiting longer would
# not help).
ALL_CELLS_RUN_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session.kernel;
  const counts = panel.content.widgets.filter(cell => cell.model.type === 'code')
                      .map(cell => cell.model.executionCount);
  const queued = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                 .some(p => p.textContent.trim() === '[*]:');
  const failed = document.querySelector(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]') !== null;
  return kernel.status === 'idle' && counts.length > 0 && !queued
         && (failed || counts.every(n => n !== null && n > 0));
}"""

RUN_ALL_JS = "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }"


def run_notebook(page, url: str, token: str, notebook: str, timeout_s: float = 120.0,
                 workspace: str | None = None) -> None:
    """Open `notebook` in JupyterLab, run every cell, and wait until all have finished
    (or one has failed: the caller then finds its error output in the page).

    With `workspace`, the notebook opens in a fresh workspace of that name, alone on the page.
    """
    where = f"/lab/workspaces/{workspace}" if workspace else "/lab"
    page.goto(f"{url}{where}/tree/{notebook}?token={token}&reset")
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout_s * 1000, polling=250)
    page.evaluate(RUN_ALL_JS)  # not awaited: a command may open a dialog and never resolve
    page.wait_for_function(ALL_CELLS_RUN_JS, timeout=timeout_s * 1000, polling=250)


def shut_down_kernels(url: str, token: str) -> None:
    """Stop every kernel session the server runs (through its REST API, no dialogs)."""
    with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=10) as reply:
        sessions = json.load(reply)
    for session in sessions:
        request = urllib.request.Request(f"{url}/api/sessions/{session['id']}?token={token}",
                                         method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


def cell_output(page, marker: str):
    """The output area of the code cell whose source starts with the comment `marker`."""
    return page.locator(".jp-CodeCell", has=page.locator(".cm-content", has_text=marker)) \
        .locator(".jp-OutputArea").first


def visible_size(locator) -> tuple[float, float]:
    """(width, height) of the first element matched, 0 when it is missing."""
    if locator.count() == 0:
        return (0.0, 0.0)
    box = locator.first.bounding_box()
    return (box["width"], box["height"]) if box else (0.0, 0.0)
