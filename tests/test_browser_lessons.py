"""Every lesson runs in a real JupyterLab, and its views draw there.

nbval runs the lessons with static figures; a learner runs them in JupyterLab with live
widgets. This test opens each lesson in headless Chromium (one JupyterLab for all of them,
quick mode), runs all cells, and checks that every cell ran, no traceback or widget error
is on the page, and every plot and widget the lesson shows has a size. Screenshots of each
view land in test-artifacts/browser/lessons/ (e.g. 03_embeddings-2.png). A chat widget is
also talked to: a message typed into its text box gets a reply.

Needs Debian's `chromium` (`apt-get install chromium`); fails, never skips, without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import lab_driver as lab  # tests/browser/lab_driver.py, on the path via tests/conftest.py

HERE = Path(__file__).parent
ROOT = HERE.parent
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts" / "browser" / "lessons"

# An output area that shows a view: a plotly plot, an ipywidgets widget, or token spans.
VIEW = ".js-plotly-plot, .jupyter-widgets.widget-container, .llmkit-token"
CHAT_MESSAGE = "Who is the story about?"


def talk_to_chat_widgets(page, stem: str) -> None:
    """Type a message into every chat widget (llmkit.viz.chat) on the page, press send, and
    wait for the reply: a new message from the user, then a finished reply after it (the
    streaming cursor gone). Screenshots land in ARTIFACTS as <stem>-chat-<n>.png."""
    chats = page.locator(".jp-OutputArea", has=page.locator(".llmkit-chat"))
    for index in range(chats.count()):
        output = chats.nth(index)
        output.scroll_into_view_if_needed()
        users = output.locator(".llmkit-chat-user")
        replies = output.locator(".llmkit-chat-assistant")
        asked, answered = users.count(), replies.count()
        output.locator(".widget-text input").first.fill(CHAT_MESSAGE)
        output.get_by_role("button", name="send").click()
        for _ in range(240):   # up to 60 s
            page.wait_for_timeout(250)
            if users.count() == asked + 1 and replies.count() == answered + 1 \
                    and "\u258c" not in output.locator(".llmkit-chat").inner_text():
                break
        else:
            raise AssertionError(f"chat widget {index} of {stem} did not reply to a message "
                                 f"({users.count() - asked} new user messages, "
                                 f"{replies.count() - answered} new replies)")
        assert users.last.inner_text().endswith(CHAT_MESSAGE)
        output.screenshot(path=str(ARTIFACTS / f"{stem}-chat-{index}.png"))


@pytest.fixture(scope="module")
def lab_page(tmp_path_factory):
    """One JupyterLab serving a copy of lessons/ (and exercises/ for the links), one page."""
    from playwright.sync_api import sync_playwright

    executable = lab.chromium_path()  # FileNotFoundError with the apt-get hint
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    shutil.copytree(ROOT / "lessons", root / "lessons",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "runs"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    os.environ["LLMKIT_QUICK"] = "1"  # the kernels inherit the server's environment
    with lab.jupyterlab_server(root, tmp / "jupyter") as (url, token), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=lab.CHROMIUM_ARGS,
                                    headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page, url, token
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_and_its_views_draw_in_jupyterlab(lab_page, path):
    page, url, token = lab_page
    try:
        lab.run_notebook(page, url, token, f"lessons/{path.name}", timeout_s=240,
                         workspace=path.stem.replace("_", "-"))
        counts = page.evaluate(lab.EXECUTION_COUNTS_JS)
        not_run = [i for i, count in enumerate(counts) if not count]
        # Only outputs count: a lesson's prose may quote these messages to explain them.
        output_text = "\n".join(page.locator(".jp-OutputArea").all_inner_texts())
        assert "Traceback" not in output_text, "a cell raised:\n" + output_text[-3000:]
        assert not not_run, f"code cells {not_run} did not run (an earlier cell failed)"
        for bad in ("Error displaying widget", "model not found"):
            assert bad not in output_text, f"an output shows {bad!r}"
        outputs = page.locator(".jp-CodeCell .jp-OutputArea", has=page.locator(VIEW))
        assert outputs.count() > 0, f"{path.name} shows no plot or widget"
        for index in range(outputs.count()):
            output = outputs.nth(index)
            view = output.locator(VIEW).first
            view.wait_for(state="attached", timeout=30_000)
            output.scroll_into_view_if_needed()
            width, height = lab.visible_size(view)
            assert width > 0 and height > 0, f"view {index} of {path.name} has no size"
            page.wait_for_timeout(300)  # let plotly finish drawing before the shot
            output.screenshot(path=str(ARTIFACTS / f"{path.stem}-{index}.png"))
        talk_to_chat_widgets(page, path.stem)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"{path.stem}-failure.png"))
        raise
    finally:
        lab.shut_down_kernels(url, token)  # the next lesson gets both cores
