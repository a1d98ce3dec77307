"""The demo in a real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Uploads a photo and a clip through the page, clicks the buttons and reads the caption and
the step table back from the DOM. On failure a screenshot is saved under ``test-artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from app_server import running_app
from media_helpers import write_clip
from playwright.sync_api import Page, expect, sync_playwright

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def app_url():
    with running_app() as url:
        yield url


@pytest.fixture()
def page(app_url, request):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(60_000)
        page.goto(app_url)
        try:
            yield page
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is None or report.failed:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
            browser.close()


def _caption_text(page: Page) -> str:
    box = page.locator("#caption textarea")
    page.wait_for_function("el => el.value.trim().length > 0", arg=box.element_handle())
    return box.input_value()


def _table_rows(page: Page) -> list[list[str]]:
    """Data rows of the step table (Gradio renders an ARIA grid; row 1 is the header)."""
    rows = page.locator('#steps [role=row]:not([aria-rowindex="1"])')
    rows.first.wait_for()
    return [rows.nth(i).locator("[role=gridcell]").all_inner_texts() for i in range(rows.count())]


def _check(page: Page) -> None:
    """Caption mentions a dog; one table row per word, with 5 sorted probabilities; one heatmap per word."""
    caption = _caption_text(page)
    assert re.search(r"\bdogs?\b", caption)
    rows = _table_rows(page)
    words = caption.split()
    assert len(rows) == len(words)
    for row, word in zip(rows, words):
        cells = [cell.strip() for cell in row]
        assert cells[1] == word and 0 <= float(cells[2]) <= 1
        probabilities = [float(cell.split()[-1]) for cell in cells[3:]]
        assert len(probabilities) == 5
        assert probabilities == sorted(probabilities, reverse=True)
    # the shipped model attends: its per-word heatmaps arrive after the caption (chained event)
    expect(page.locator("#attention img")).to_have_count(len(words))


def test_photo_upload_in_the_browser(page: Page, dog_photo):
    page.locator("#photo input[type=file]").set_input_files(str(dog_photo))
    page.get_by_role("button", name="Caption photo").click()
    _check(page)


def test_clip_upload_in_the_browser(page: Page, tmp_path, dog_photo):
    clip = write_clip(tmp_path / "dog.mp4", dog_photo)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video input[type=file]").set_input_files(str(clip))
    page.get_by_role("button", name="Caption clip").click()
    _check(page)
    assert page.locator("#timeline").get_by_text(re.compile(r"\d+\.\d-\d+\.\d s:")).count() >= 1
