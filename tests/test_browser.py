"""The widgets render in a real JupyterLab: run tests/browser/widgets.ipynb in headless
Chromium and look at the page.

For every view the notebook shows (tokens, attention heatmap and lines, embeddings, next
token, training dashboard, a static figure, bertviz), the test finds the cell's output and
asserts that the plot or widget is really in the DOM with a non-zero size, and that no cell
wrote an error or a traceback. A screenshot of each view lands in test-artifacts/browser/.

Needs Debian's `chromium` (`apt-get install chromium`); the test fails, never skips,
without it. Takes about a minute on two cores.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import lab_driver as lab  # tests/browser/lab_driver.py, on the path via tests/conftest.py

HERE = Path(__file__).parent


NOTEBOOK = HERE / "browser" / "widgets.ipynb"
ARTIFACTS = HERE.parent / "test-artifacts" / "browser"

# view marker -> CSS selector of what must be drawn inside that cell's output.
PLOT = ".js-plotly-plot .main-svg"
EXPECTED = {
    "# view: tokens": ".widget-textarea, .llmkit-token",
    "# view: attention": PLOT,
    "# view: attention-lines": PLOT,
    "# view: embeddings": PLOT,
    "# view: next-token": PLOT,
    "# view: dashboard": PLOT,
    "# view: static": PLOT,
}
# Live views must also show their ipywidgets controls.
CONTROLS = {
    "# view: tokens": ".widget-textarea",
    "# view: attention": ".widget-dropdown",
    "# view: embeddings": ".widget-toggle-buttons",
    "# view: next-token": ".widget-hslider, .widget-slider",
    "# view: dashboard": ".widget-hprogress",
}


def check_no_errors(page) -> None:
    """No cell wrote to stderr, and no traceback or widget error is on the page."""
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert errors.count() == 0, "a cell wrote to stderr:\n" + "\n".join(errors.all_inner_texts())
    page_text = page.locator(".jp-NotebookPanel").inner_text()
    for bad in ("Traceback", "Error displaying widget", "model not found"):
        assert bad not in page_text, f"the page shows {bad!r}"


@pytest.mark.browser
@pytest.mark.slow
def test_every_view_renders_in_jupyterlab(tmp_path):
    from playwright.sync_api import sync_playwright

    executable = lab.chromium_path()  # FileNotFoundError with the apt-get hint: fail, not skip
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    with lab.jupyterlab_server(root, tmp_path / "jupyter") as (url, token), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=lab.CHROMIUM_ARGS,
                                    headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            lab.run_notebook(page, url, token, NOTEBOOK.name)
            check_no_errors(page)
            for marker, selector in EXPECTED.items():
                drawn = lab.cell_output(page, marker).locator(selector)
                drawn.first.wait_for(state="visible", timeout=30_000)
                width, height = lab.visible_size(drawn)
                assert width > 0 and height > 0, f"{marker}: {selector} has no size"
            for marker, selector in CONTROLS.items():
                width, height = lab.visible_size(lab.cell_output(page, marker).locator(selector))
                assert width > 0 and height > 0, f"{marker}: no visible control ({selector})"
            # bertviz needs its scripts from a CDN, unreachable here: its container must be
            # in the page, but it is not expected to draw anything.
            assert lab.cell_output(page, "# view: bertviz").locator("[id^=bertviz-]").count() == 1
            check_no_errors(page)  # widgets that failed late say so in the page

            for marker in list(EXPECTED) + ["# view: bertviz"]:
                output = lab.cell_output(page, marker)
                output.scroll_into_view_if_needed()
                page.wait_for_timeout(300)  # let plotly finish its transition before the shot
                output.screenshot(path=str(ARTIFACTS / f"{marker.removeprefix('# view: ')}.png"))
            page.screenshot(path=str(ARTIFACTS / "jupyterlab.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "failure.png"))  # what the page looked like
            raise
        finally:
            browser.close()
    print(f"browser test: {time.monotonic() - started:.1f} s")
