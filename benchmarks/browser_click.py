"""Click -> caption in a real browser: the app beside Gradio's no-op floor, in alternation.

    python -m benchmarks.browser_click --clicks 30 --out benchmarks/browser_click.json

Starts ``app.py`` and ``benchmarks/noop_app.py`` as servers (:class:`~benchmarks.app_load.AppProcess`)
and opens each in headless Chromium (Playwright, Debian's ``/usr/bin/chromium``). Before each
click a page gets the other of two demo photos (the upload is not timed), so that the caption
changes, and the click follows 250 ms after the photo shows. The time runs inside the page,
from the click on "Caption photo" to the first animation frame whose caption box holds the new
caption, so Playwright's own round trips count on neither side; the next click waits until the
page is quiet (every chained event done). The clicks of the two apps alternate
(:func:`~benchmarks.timing.measure_interleaved`). Prints both medians and their ratio, each
app's start (until it answers a client) and the app's first caption (its model loads after the
page is served), writes them as JSON, and exits with status 1 when the ratio is over the target.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from gradio_client import handle_file

from benchmarks.app_load import AppProcess
from benchmarks.timing import measure_interleaved

__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "ClickSession", "app_over_floor", "launch_chromium", "main", "measure_clicks"]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHOTOS = (ROOT / "demo" / "flickr8k_dogs.jpg", ROOT / "demo" / "chelsea.jpg")  # captions that differ
APP = "app: click -> caption shown"
FLOOR = "no-op Gradio app: click -> caption shown"
TARGET = 1.3  # the app's median over the no-op floor's
QUIET_MS = 300  # no event running for this long: the page has settled
# the click comes this long after the photo shows: quicker than a person sees it and clicks (the
# app captions a photo as it arrives, so that the click has only to show the caption)
CLICK_AFTER_MS = 250
TIMEOUT_MS = 60_000

# Clicks the button and resolves with the milliseconds until the first animation frame whose
# caption box holds a new non-empty text, then waits until no status tracker has been showing
# for QUIET_MS and adds the time from the click to the last one seen ("settled").
_TIMED_CLICK = """async ({button, box, quietMs, timeoutMs}) => {
    const text = () => document.querySelector(box).value;
    const before = text();
    const busy = () => [...document.querySelectorAll('[data-testid=status-tracker]')]
        .some((tracker) => !tracker.classList.contains('hide'));
    const start = performance.now();
    document.querySelector(button).click();
    const shown = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no new caption within ' + timeoutMs + ' ms')), timeoutMs);
        const check = () => {
            if (text() !== before && text().trim()) { clearTimeout(timer); resolve(performance.now() - start); }
            else requestAnimationFrame(check);
        };
        requestAnimationFrame(check);
    });
    const settled = await new Promise((resolve) => {
        let last = performance.now();
        const poll = () => {
            const now = performance.now();
            if (busy()) last = now;
            if (now - last >= quietMs || now - start > timeoutMs) resolve(last - start); else setTimeout(poll, 10);
        };
        poll();
    });
    return {shown, settled: Math.max(shown, settled)};
}"""

_PHOTO_SHOWN = """name => [...document.querySelectorAll('#photo img')]
    .some((img) => decodeURIComponent(img.src).endsWith('/' + name))"""


def launch_chromium(playwright):  # noqa: ANN001, ANN201 - Playwright's own types
    """Headless Chromium (the system's), with nothing fetched from the web."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)


class ClickSession:
    """One app open in a browser page (``#photo`` input, ``#caption_photo`` button, ``#caption``
    box), captioning ``photos`` in turn; :meth:`click` times one caption."""

    def __init__(self, browser, url: str, photos: tuple[Path, ...] = PHOTOS) -> None:  # noqa: ANN001
        self.page = browser.new_page(viewport={"width": 1400, "height": 1200})
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.goto(url)
        self.page.locator("#caption textarea").wait_for()
        self.photos = photos
        self.clicks = 0
        self.settled_ms: list[float] = []  # click -> every chained event done, one per click

    def click(self) -> float:
        """Show the next photo (untimed), click, and return the milliseconds until its caption shows."""
        photo = self.photos[self.clicks % len(self.photos)]
        self.clicks += 1
        self.page.bring_to_front()  # a page in the background may get no animation frames
        self.page.locator("#photo input[type=file]").set_input_files(str(photo))
        self.page.wait_for_function(_PHOTO_SHOWN, arg=photo.name)
        self.page.wait_for_timeout(CLICK_AFTER_MS)
        times = self.page.evaluate(
            _TIMED_CLICK,
            {"button": "#caption_photo", "box": "#caption textarea", "quietMs": QUIET_MS, "timeoutMs": TIMEOUT_MS},
        )
        self.settled_ms.append(times["settled"])
        return times["shown"]

    def caption(self) -> str:
        return self.page.locator("#caption textarea").input_value()


def measure_clicks(urls: dict[str, str], *, clicks: int, warmup: int) -> dict:
    """Time ``clicks`` clicks per app (after ``warmup`` each), the apps in alternation:
    for each, the median and p95 to the caption shown, every sample, the median to settled,
    and the last caption."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            sessions = {name: ClickSession(browser, url) for name, url in urls.items()}
            timings = measure_interleaved(
                {name: session.click for name, session in sessions.items()},
                warmup=warmup,
                repeats=clicks,
                self_timed=True,
            )
            return {
                name: {
                    **timings[name].to_dict(samples=True),
                    "settled_median_ms": round(statistics.median(session.settled_ms[warmup:]), 1),
                    "last_caption": session.caption(),
                }
                for name, session in sessions.items()
            }
        finally:
            browser.close()


def app_over_floor(rows: dict) -> float:
    """The app's median click -> caption over the no-op floor's (the target's ratio)."""
    return rows[APP]["median_ms"] / rows[FLOOR]["median_ms"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=30, help="timed clicks per app")
    parser.add_argument("--warmup", type=int, default=3, help="untimed clicks per app first")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each app")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "browser_click.json")
    args = parser.parse_args(argv)
    floor = AppProcess(threads=args.threads, script=ROOT / "benchmarks" / "noop_app.py")
    app = AppProcess(threads=args.threads)
    try:
        app.client.predict(handle_file(str(PHOTOS[0])), api_name="/caption")  # waits for the model
        first_caption_s = time.perf_counter() - app.started
        rows = measure_clicks({FLOOR: floor.url, APP: app.url}, clicks=args.clicks, warmup=args.warmup)
    finally:
        floor.close()
        app.close()
    ratio = app_over_floor(rows)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "threads": args.threads,
        "rows": rows,
        "app_ready_s": round(app.startup_s, 1),  # start of `python app.py` -> it answers a client
        "app_first_caption_s": round(first_caption_s, 1),  # -> its first caption (the model loaded)
        "floor_ready_s": round(floor.startup_s, 1),  # the same for the no-op app, started just before
        "ratio": round(ratio, 2),
        "target": TARGET,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, row in rows.items():
        print(
            f"{name:42s} median {row['median_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
            f"settled {row['settled_median_ms']:7.1f} ms"
        )
    verdict = "within" if ratio <= TARGET else "OVER"
    print(
        f"click -> caption, app / no-op floor: {ratio:.2f} ({verdict} the target {TARGET}); "
        f"app ready in {app.startup_s:.1f} s (first caption at {first_caption_s:.1f} s), "
        f"the no-op app in {floor.startup_s:.1f} s"
    )
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ratio"] <= TARGET else 1)
