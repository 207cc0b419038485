"""End-to-end test of the search page in a real headless Chromium (Playwright).

A library of tiny generated videos (H.264 MP4, VP9 WebM and an MPEG-4 part 2 AVI that Chromium
cannot play) is indexed, served by uvicorn on a free 127.0.0.1 port, and the test types a query,
waits for the result grid, clicks a hit and checks that the <video> element really plays from
the hit's span start (exact seek, not a keyframe), then clicks the AVI hit and checks the page
says the browser cannot play it. Skips (with the reason) only when no Chromium binary exists.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from serve_fixtures import build_real_index, make_video

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None:
        print("test_browser: no chromium binary (/usr/bin/chromium, chromium, chromium-browser on PATH)")
        pytest.skip("no chromium binary: /usr/bin/chromium, chromium and chromium-browser are all missing")
    # playwright is a dev dependency: its absence is a failure, not a reason to skip.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


SRT = """1
00:00:01,000 --> 00:00:02,500
the council debates the budget
"""


def build_library(root: Path) -> dict[str, Path]:
    (root / "clips").mkdir(parents=True)
    (root / "grey ramp.srt").write_text(SRT)  # words only this video has (the page's subtitle hit)
    return {
        "mp4": make_video(root / "grey ramp.mp4", seconds=6.0),
        "webm": make_video(root / "clips" / "ramp.webm", seconds=5.0),
        "avi": make_video(root / "old.avi", seconds=3.0),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from vidclip.serve.app import BackgroundServer, create_app

    base = tmp_path_factory.mktemp("browser")
    build_library(base / "library")
    index, report, _clip = build_real_index(base / "library", base / "index")
    assert report.indexed == 3 and not report.failed, report.to_dict()
    with BackgroundServer(create_app(index, max_k=20)) as srv:
        yield srv, index
    index.close()


def _open_page(chromium, url: str):
    """A new page at ``url`` and the list its JavaScript errors (uncaught, or console.error) land in."""
    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    return page, errors


def test_search_click_plays_from_span_start(chromium, served):
    srv, _index = served
    page, errors = _open_page(chromium, srv.url)
    # Random weights: the banner says rankings mean nothing (the test only checks plumbing).
    page.wait_for_selector("#notice:not([hidden])")
    page.fill("#q", "a grey ramp")
    page.check("#segments")          # rank moments, so spans start past 0
    page.select_option("#k", "20")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .hit")
    cards = page.locator("#results .hit")
    n = cards.count()
    # 2 s windows every 1 s of a 6 s, a 5 s and a 3 s video: 5 + 4 + 2 moments.
    assert n == 11
    assert "q=a+grey+ramp" in page.url and "segments=true" in page.url  # bookmarkable, Back works
    assert "11 moments for “a grey ramp”" in page.inner_text("#status")

    # Every thumbnail really loaded (a decoded JPEG, not a broken image).
    page.wait_for_function("() => [...document.querySelectorAll('#results img.thumb')].every(i => i.complete)")
    widths = page.eval_on_selector_all("#results img.thumb", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == n and all(w > 0 for w in widths)

    # The playable hit with the latest span start (a time between keyframes, so an exact seek shows).
    hits = page.evaluate("""() => [...document.querySelectorAll('#results .hit')].map((b, i) => ({
        i, start: Number(b.dataset.start), end: Number(b.dataset.end),
        name: b.querySelector('.hit-name').textContent, span: b.querySelector('.hit-span').textContent,
        alt: b.querySelector('img.thumb').alt}))""")
    # One time format on the whole page, the CLI's and format_time's: m:ss.s, always one decimal.
    from vidclip.serve.media import format_span, format_time

    for h in hits:
        assert re.fullmatch(r"\d+:\d\d\.\d\u2013\d+:\d\d\.\d", h["span"]), h
        assert h["span"] == format_span(h["start"], h["end"])
        assert re.fullmatch(r"Frame at \d+:\d\d\.\d", h["alt"]), h
    # The H.264 MP4 moment that starts latest: 4.0 s lies between keyframes (2.5 s, 5.0 s), so
    # a player that snapped to a keyframe would show 2.5, not 4.0.
    target = max((h for h in hits if h["name"].endswith(".mp4")), key=lambda h: h["start"])
    start = target["start"]
    assert start == 4.0

    # currentTime read in 'seeking' is the seek target exactly (playback cannot move it while
    # seeking); read later, e.g. in 'seeked', it may already have advanced on a busy machine.
    page.evaluate("""() => {
        const v = document.getElementById('player');
        window.__seek = null;
        v.addEventListener('seeking', () => { if (window.__seek === null) window.__seek = v.currentTime; });
    }""")
    cards.nth(target["i"]).click()
    page.wait_for_function("() => window.__seek !== null", timeout=15000)
    assert page.evaluate("() => window.__seek") == pytest.approx(start, abs=1e-3)
    # It plays forward from there: the first played range begins at the span start.
    page.wait_for_function("s => document.getElementById('player').currentTime > s + 0.3", arg=start, timeout=15000)
    state = page.evaluate("""() => { const v = document.getElementById('player');
        return {paused: v.paused, played0: v.played.length ? v.played.start(0) : null, err: v.error && v.error.code,
                src: v.getAttribute('src'), title: document.getElementById('player-title').textContent}; }""")
    assert state["err"] is None and not state["paused"]
    assert state["played0"] == pytest.approx(start, abs=0.05)
    assert state["src"].endswith("/stream") and state["title"] == target["name"]
    info = page.inner_text("#player-info")
    assert info.startswith(f"Playing from {format_time(start)} (matched {format_span(start, target['end'])}"), info
    assert page.is_hidden("#player-error")

    # A format Chromium cannot decode: the page says so and offers the file.
    avi = next(h for h in hits if h["name"].endswith(".avi"))
    cards.nth(avi["i"]).click()
    page.wait_for_selector("#player-error:not([hidden])", timeout=15000)
    assert "cannot play" in page.inner_text("#player-error")
    assert page.get_attribute("#player-error a", "href").endswith("/stream")

    # Escape closes the player and focus returns to the card.
    page.keyboard.press("Escape")
    assert page.is_hidden("#player-section")
    assert not errors, errors
    page.close()


def test_words_mode_shows_the_subtitle_hit_and_filters_restrict(chromium, served):
    srv, _index = served
    page, errors = _open_page(chromium, srv.url)
    page.fill("#q", "budget")
    page.select_option("#mode", "text")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .hit")
    first = page.locator("#results .hit").first
    assert first.locator(".hit-name").inner_text() == "grey ramp.mp4"
    assert first.locator(".hit-span").inner_text() == "0:01.0\u20130:02.5"  # the cue's span is the moment
    match = first.locator(".hit-match")
    assert match.locator("mark").all_inner_texts() == ["budget"]
    assert "subtitle grey ramp.srt 0:01.0\u20130:02.5" in match.inner_text()
    assert "the council debates the budget" in match.inner_text()
    assert "mode=text" in page.url

    # Filters: only the videos under clips/ (one), even with k=20, pictures only (no words shown).
    page.fill("#q", "a grey ramp")
    page.select_option("#mode", "visual")
    page.click("#filters summary")
    page.fill("#f-path", "clips/*")
    page.fill("#f-max-duration", "5.5")
    page.select_option("#k", "20")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('(filtered)')")
    names = page.locator("#results .hit .hit-name").all_inner_texts()
    assert names == ["clips/ramp.webm"]
    assert page.locator("#results .hit-match").count() == 0
    assert "path=clips%2F*" in page.url and "max_duration=5.5" in page.url

    # A bookmarked filtered URL restores the form and the search.
    page.goto(srv.url + "?q=a+grey+ramp&k=20&mode=visual&min_duration=5.5&meta=")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('(filtered)')")
    assert page.locator("#results .hit .hit-name").all_inner_texts() == ["grey ramp.mp4"]
    assert page.input_value("#f-min-duration") == "5.5" and page.evaluate("document.getElementById('filters').open")
    assert not errors, errors
    page.close()
