"""The browser client in headless Chromium, with a fake mic and camera, against the real server."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import IN_CI, cli_server, require_tool

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sync_playwright = None

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).parent / "artifacts"
SENTENCE = "Hello there. Can you tell me what you see in the picture?"
# Long enough after each spoken sentence for an answer to start before the looping fake mic
# speaks again, and short enough that the next loop still interrupts that answer.
TRAILING_SILENCE_S = 3.0
TURN_TIMEOUT_MS = 60_000
# The page's own server is the only host it may reach; no CDN, font or telemetry requests.
NO_NETWORK_FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE_VIEWPORT = {"width": 412, "height": 860}
# Every page but one connects with it, so the browser's subprotocol key path is always in use.
API_KEY = "browser-test-key"


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("espeak-ng")
    require_tool("sox")
    folder = tmp_path_factory.mktemp("speech")
    spoken = folder / "spoken.wav"
    looped = folder / "speech_then_silence.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(spoken), SENTENCE], check=True)
    # Chromium's fake capture reads 16-bit PCM WAV and loops it.
    subprocess.run(
        [
            "sox",
            str(spoken),
            "-r",
            "48000",
            "-b",
            "16",
            "-c",
            "1",
            str(looped),
            "pad",
            "0.3",
            str(TRAILING_SILENCE_S),
        ],
        check=True,
    )
    return looped


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with cli_server(["--api-key", API_KEY], log_path) as url:
        yield url
        assert "Traceback" not in log_path.read_text()


@pytest.fixture(scope="module")
def browser(speech_wav: Path):
    if sync_playwright is None:
        # CI must exercise the browser; a developer box without playwright may skip.
        (pytest.fail if IN_CI else pytest.skip)("the playwright package is not installed")
    # Debian's chromium; `playwright install` cannot download browsers here.
    chromium = require_tool("chromium")
    with sync_playwright() as playwright:
        # Playwright gives every launch a fresh temporary profile (it rejects --user-data-dir here).
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={speech_wav}",
                *NO_NETWORK_FLAGS,
            ],
        )
        yield browser
        browser.close()


@contextmanager
def _browsing(browser, server_url: str, settings: dict) -> Iterator[tuple]:
    """A fresh phone-sized page with `settings` already stored; yields it with what it did wrong."""
    context = browser.new_context(viewport=PHONE_VIEWPORT)
    context.add_init_script(
        f"localStorage.setItem('mlx-realtime.settings', {json.dumps(json.dumps(settings))})"
    )
    page = context.new_page()
    page.set_default_timeout(TURN_TIMEOUT_MS)
    foreign_requests: list[str] = []
    page_errors: list[str] = []
    page.on("request", lambda request: _record_foreign(request.url, server_url, foreign_requests))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page_errors.append(message.text))
    try:
        yield page, foreign_requests, page_errors
    finally:
        context.close()


@pytest.fixture
def page(browser, server_url: str):
    with _browsing(browser, server_url, {"apiKey": API_KEY}) as (page, foreign_requests, page_errors):
        page.goto(server_url)
        _expect_connected(page)
        yield page
    assert foreign_requests == []
    assert page_errors == []


def _record_foreign(url: str, server_url: str, foreign: list[str]) -> None:
    http_origin = server_url.rstrip("/")
    ws_origin = http_origin.replace("http://", "ws://", 1)
    if not url.startswith((http_origin, ws_origin, "data:", "blob:")):
        foreign.append(url)


def _expect_connected(page) -> None:
    page.wait_for_selector('#connection[data-state="connected"]')
    _wait_count(page, "session.updated", 1)


def _wait_count(page, event_type: str, at_least: int, timeout_ms: int = TURN_TIMEOUT_MS) -> None:
    page.wait_for_function(
        "([type, n]) => (window.mlxRealtime.counts[type] ?? 0) >= n",
        arg=[event_type, at_least],
        timeout=timeout_ms,
    )


def _last_event(page, event_type: str) -> dict:
    return page.evaluate("(type) => window.mlxRealtime.last[type]", event_type)


def _wait_finished_answer(page, index: int) -> dict:
    """Waits until the index-th assistant turn has text and a final status; returns both."""
    page.wait_for_function(
        """(index) => {
            const turn = document.querySelectorAll(".turn.assistant")[index];
            return turn && turn.dataset.status !== "in_progress" && turn.querySelector(".text").textContent;
        }""",
        arg=index,
    )
    turn = page.locator(".turn.assistant").nth(index)
    return {
        "status": turn.get_attribute("data-status"),
        "text": turn.locator(".text").text_content(),
        "meta": turn.locator(".meta").text_content(),
    }


def _change_settings(page, **fields: str) -> None:
    page.click("#open-settings")
    for selector, value in fields.items():
        field = page.locator(f"#{selector.replace('_', '-')}")
        field.fill(value)
        field.dispatch_event("change")
    page.click("#close-settings")


def _expect_realtime_audio_rate(page) -> None:
    """The worklet must turn the context's rate into 24 kHz: audio sent keeps pace with the clock."""
    page.wait_for_function("window.mlxRealtime.micRateHz !== null")
    assert page.evaluate("window.mlxRealtime.micRateHz") != 24000, "no resampling to check"
    start = page.evaluate("[window.mlxRealtime.sentAudioMs, performance.now()]")
    page.wait_for_function("(startMs) => window.mlxRealtime.sentAudioMs >= startMs + 3000", arg=start[0])
    end = page.evaluate("[window.mlxRealtime.sentAudioMs, performance.now()]")
    audio_per_wall = (end[0] - start[0]) / (end[1] - start[1])
    # Chunks arrive in bursts of 40 ms, so the ratio is near 1, not exactly 1; a wrong ratio
    # (44.1 kHz read as 24 kHz) would give 1.8 or 0.54.
    assert 0.85 < audio_per_wall < 1.15


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def test_page_connects_configures_the_session_and_reconnects(page):
    # The CLI serves the demo model here; /healthz says so and the page warns.
    expect(page.locator("#demo-banner")).to_be_visible()
    expect(page.locator("#demo-banner")).to_contain_text("answers are random text")
    session = _last_event(page, "session.updated")["session"]
    assert session["output_modalities"] == ["text"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["frames"]["max_per_turn"] == 1

    page.evaluate("window.mlxRealtime.drop()")
    page.wait_for_function("window.mlxRealtime.sessions === 2")
    page.wait_for_selector('#connection[data-state="connected"]')
    assert page.locator(".note", has_text="Reconnected").count() == 1


def test_spoken_turn_with_camera_streams_an_answer_that_speech_interrupts(page):
    page.click("#camera")
    page.wait_for_function("window.mlxRealtime.sentFrames >= 1")
    page.click("#mic")
    _expect_realtime_audio_rate(page)
    _wait_count(page, "input_audio_buffer.speech_started", 1)
    _wait_count(page, "input_audio_buffer.speech_stopped", 1)

    user_turn = page.locator(".turn.user").first
    user_turn.locator(".text.voice").wait_for()
    thumbnail = user_turn.locator("img.thumb")
    assert thumbnail.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert page.evaluate("document.querySelector('.turn.user img.thumb').naturalWidth") > 0

    # The fake mic loops, so its next sentence talks over an answer still being generated.
    page.wait_for_function(
        """() => [...document.querySelectorAll('.turn.assistant[data-status="cancelled"]')]
                 .some((turn) => turn.querySelector(".text").textContent.length > 0)"""
    )
    interrupted = page.locator('.turn.assistant[data-status="cancelled"]').first
    assert re.match(r"Interrupted · first text after \d+ ms", interrupted.locator(".meta").text_content())
    _screenshot(page, "spoken_turn_phone.png")
    page.set_viewport_size({"width": 1280, "height": 800})
    _screenshot(page, "spoken_turn_desktop.png")


def test_push_to_talk_and_typed_turns_answer_and_talking_cancels(page):
    page.click("#open-settings")
    page.check('input[name="mode"][value="push-to-talk"]')
    page.click("#close-settings")
    _change_settings(page, max_tokens="12")
    page.wait_for_function(
        """() => {
            const session = window.mlxRealtime.last["session.updated"].session;
            return session.audio.input.turn_detection === null && session.max_output_tokens === 12;
        }"""
    )

    talk = page.locator("#talk")
    talk.focus()
    page.keyboard.down("Space")
    page.wait_for_function("window.mlxRealtime.sentAudioMs >= 2000")
    page.keyboard.up("Space")
    _wait_count(page, "input_audio_buffer.committed", 1)
    page.locator(".turn.user .text.voice").wait_for()
    spoken_answer = _wait_finished_answer(page, 0)
    assert spoken_answer["status"] in {"completed", "incomplete"}
    assert re.search(r"first text after \d+ ms · [\d.]+ tok/s · \d+ tokens", spoken_answer["meta"])

    page.fill("#message", "What colour is the sky?")
    page.press("#message", "Enter")
    page.locator(".turn.user .text", has_text="What colour is the sky?").wait_for()
    typed_answer = _wait_finished_answer(page, 1)
    assert typed_answer["status"] in {"completed", "incomplete"}

    page.click("#camera")
    page.fill("#message", "What is in this picture?")
    page.click("#still")
    still_turn = page.locator(".turn.user", has_text="What is in this picture?")
    assert still_turn.locator("img.thumb").get_attribute("src").startswith("data:image/")
    _wait_finished_answer(page, 2)
    _screenshot(page, "push_to_talk_phone.png")

    _change_settings(page, max_tokens="")
    # Blank means the server's own default, as session.created announced it (not "inf").
    page.wait_for_function(
        """() => {
            const last = window.mlxRealtime.last;
            const limit = last["session.updated"].session.max_output_tokens;
            return limit !== 12 && limit === last["session.created"].session.max_output_tokens;
        }"""
    )
    assert _last_event(page, "session.updated")["session"]["max_output_tokens"] == 1024
    page.fill("#message", "Tell me a long story.")
    page.press("#message", "Enter")
    page.wait_for_function(
        """() => {
            const turn = document.querySelectorAll(".turn.assistant")[3];
            return turn && turn.querySelector(".text").textContent.length > 0;
        }"""
    )
    talk.focus()
    page.keyboard.down("Space")
    stopped = page.locator(".turn.assistant").nth(3)
    expect(stopped).to_have_attribute("data-status", "cancelled", timeout=TURN_TIMEOUT_MS)
    expect(stopped.locator(".meta")).to_contain_text("Stopped")
    page.keyboard.up("Space")


def test_the_stop_button_cancels_the_streaming_answer(page):
    stop = page.locator("#stop")
    expect(stop).to_be_hidden()
    page.fill("#message", "Tell me a long story.")
    page.press("#message", "Enter")
    page.wait_for_function("document.querySelector('.turn.assistant .text')?.textContent.length > 0")
    expect(stop).to_be_visible()
    stop.click()
    answer = page.locator(".turn.assistant").first
    expect(answer).to_have_attribute("data-status", "cancelled")
    expect(answer.locator(".meta")).to_contain_text("Stopped")
    expect(stop).to_be_hidden()
    _screenshot(page, "stopped_phone.png")


def test_error_events_are_shown_and_the_session_stays_usable(page):
    page.evaluate("window.mlxRealtime.send({type: 'no.such.event'})")
    _wait_count(page, "error", 1)
    error = _last_event(page, "error")["error"]
    shown = page.locator("#errors .error").first
    assert shown.locator(".code").text_content() == error["code"]
    assert shown.locator(".message").text_content() == error["message"]
    _screenshot(page, "error_phone.png")

    shown.get_by_role("button", name=re.compile("Dismiss")).press("Enter")
    expect(page.locator("#errors .error")).to_have_count(0)
    page.fill("#message", "Still there?")
    page.press("#message", "Enter")
    page.wait_for_function("document.querySelector('.turn.assistant .text')?.textContent.length > 0")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")


def test_a_refused_key_is_reported_and_a_corrected_key_connects(browser, server_url):
    with _browsing(browser, server_url, {"apiKey": "wrong-key"}) as (page, foreign_requests, page_errors):
        page.goto(server_url)
        status = page.locator("#connection")
        expect(status).to_have_attribute("data-state", "rejected", timeout=TURN_TIMEOUT_MS)
        expect(status).to_contain_text("API key")

        page.click("#open-settings")
        page.fill("#api-key", API_KEY)
        page.locator("#api-key").dispatch_event("change")
        page.click("#close-settings")
        _expect_connected(page)
        _screenshot(page, "key_corrected_phone.png")
    assert foreign_requests == []
    # Chromium logs the refused handshake itself; nothing else may go wrong.
    assert [error for error in page_errors if "/v1/realtime' failed" not in error] == []
