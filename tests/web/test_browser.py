"""The page in a real browser: Debian's chromium (headless), driven by Selenium through
chromium-driver, against `archive-search serve`'s app over a small TTS archive indexed with the
shipped models.

Skipped, with the reason, only where chromium cannot start. Set ARCHIVE_SEARCH_SCREENSHOT to a
path to also write the page's screenshot there (docs/web-page.png is made so).
"""

import os
import shutil
import socket
import threading
import time
from types import SimpleNamespace

import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the web extra is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the web extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra) is not installed")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from archive_search import Archive  # noqa: E402
from archive_search.audio import SAMPLE_RATE  # noqa: E402
from archive_search.demo import build_demo_archive, hit_matches, speak  # noqa: E402
from archive_search.embedders.registry import load_models  # noqa: E402
from archive_search.web import create_app  # noqa: E402

pytestmark = pytest.mark.slow

WAIT_S = 60
"""Seconds to wait for the page; the first query loads the reranker's models."""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app over a TTS archive, served by uvicorn on a free loopback port: (base URL, truth, root)."""
    root = tmp_path_factory.mktemp("browser")
    truth = build_demo_archive(root)
    models = load_models()
    assert Archive.open(root / "index", models).add([root / "audio"]).ok
    bundles = {"parallelkws": models}

    def bundle(scoring):
        return bundles.setdefault(scoring, models if scoring == "parallelkws" else load_models(text_scoring=scoring))

    app = create_app(root / "index", models=bundle, allowed_hosts=["127.0.0.1", "localhost"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", truth, root
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium and chromium-driver are not installed (scripts/apt-packages.txt lists them)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                     # a fake microphone (a beep), allowed without asking: the recording path runs end to end
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]:  # fmt: skip
        options.add_argument(argument)
    try:
        chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    except WebDriverException as exc:
        pytest.skip(f"chromium cannot start here: {exc.msg}")
    yield chrome
    chrome.quit()


def page_hits(browser):
    return [SimpleNamespace(**hit) for hit in browser.execute_script("return state.hits")]


def file_time(browser, hit):
    """Where in the hit's file the page's audio element is: its time plus where the clip starts."""
    return browser.execute_script("return player.currentTime") + hit.clip_start


def wait_for_results(browser, what):
    """Wait until the status line reports hits for `what` (or an error); return the hits."""
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, WAIT_S).until(lambda b: f"for {what}" in status.text or "error" in status.get_attribute("class"))
    assert "error" not in status.get_attribute("class"), status.text
    return page_hits(browser)


def test_search_play_and_query_by_example_in_chromium(served, browser, tmp_path):
    url, truth, root = served
    browser.get(url)
    WebDriverWait(browser, WAIT_S).until(lambda b: "files" in b.find_element(By.ID, "stats").text)
    assert "4 files" in browser.find_element(By.ID, "stats").text

    # an empty query says so, without asking the server
    browser.find_element(By.ID, "q").send_keys(Keys.ENTER)
    assert "empty" in browser.find_element(By.ID, "status").text

    # type a query: the right place comes first, with its words
    browser.find_element(By.ID, "q").send_keys("lighthouse", Keys.ENTER)
    hits = wait_for_results(browser, "“lighthouse”")
    assert hits and hit_matches(hits[0], truth, "lighthouse"), hits[:2]
    first = browser.find_elements(By.CSS_SELECTOR, "#hits .hit")[0]
    assert hits[0].name in first.text and f"{hits[0].score:.3f}" in first.text

    # play: the audio element's time moves through the hit (clip time + where the clip starts)
    first.find_element(By.CSS_SELECTOR, "button.play").click()
    positions = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        positions.append(file_time(browser, hits[0]))
        if positions[-1] > hits[0].end:
            break
        time.sleep(0.05)
    inside = [p for p in positions if hits[0].start <= p <= hits[0].end]
    played = f"played {positions[0]:.2f}..{positions[-1]:.2f} s, hit {hits[0]}"
    assert len(inside) >= 2 and inside[-1] > inside[0], played
    assert "playing" in first.get_attribute("class")

    # the arrow key moves to the next hit and plays it
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_DOWN)
    WebDriverWait(browser, 5).until(lambda b: b.execute_script("return state.playing") == 1)
    assert "selected" in browser.find_elements(By.CSS_SELECTOR, "#hits .hit")[1].get_attribute("class")

    # query by example: upload a clip of the word in another voice
    clip = tmp_path / "volcano.wav"
    sf.write(str(clip), speak("volcano", "en-us+m3", 150), SAMPLE_RATE)
    browser.find_element(By.ID, "clip").send_keys(str(clip))
    hits = wait_for_results(browser, "the clip volcano.wav")
    assert hits and hit_matches(hits[0], truth, "volcano"), hits[:2]

    # a file that is not audio gets a clear message
    notes = tmp_path / "notes.wav"
    notes.write_text("shopping list")
    browser.find_element(By.ID, "clip").send_keys(str(notes))
    WebDriverWait(browser, WAIT_S).until(lambda b: "could not be searched" in b.find_element(By.ID, "status").text)

    # record from the (fake) microphone: MediaRecorder's webm/opus reaches the server and is decoded
    record = browser.find_element(By.ID, "record")
    record.click()
    WebDriverWait(browser, 10).until(lambda b: "Recording" in b.find_element(By.ID, "status").text)
    time.sleep(1.5)
    record.click()
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, WAIT_S).until(lambda b: status.text.split(":")[0] not in ("Searching…", "Recording"))
    recorded = status.text
    assert "recording.webm" in recorded or "the query clip" in recorded, recorded  # hits, or the verdict on a beep
    assert "not audio" not in recorded and "unsupported" not in recorded, recorded

    # nothing scores 0.999 for a word that is never spoken: the page says there are no hits
    browser.find_element(By.ID, "threshold").send_keys("0.999")
    browser.find_element(By.ID, "q").clear()
    browser.find_element(By.ID, "q").send_keys("quarterback", Keys.ENTER)
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, WAIT_S).until(lambda b: "No hits for “quarterback”" in status.text)
    assert browser.find_elements(By.CSS_SELECTOR, "#hits .hit") == []

    browser.find_element(By.ID, "threshold").clear()
    browser.find_element(By.ID, "q").clear()
    browser.find_element(By.ID, "q").send_keys("harvest moon", Keys.ENTER)
    hits = wait_for_results(browser, "“harvest moon”")
    assert hits and hit_matches(hits[0], truth, "harvest moon")
    browser.find_elements(By.CSS_SELECTOR, "#hits .hit button.play")[0].click()
    WebDriverWait(browser, 10).until(lambda b: file_time(b, hits[0]) > hits[0].start + 0.3)
    browser.execute_script("player.pause()")  # the screenshot shows where playback is
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("ARCHIVE_SEARCH_SCREENSHOT"):  # for the docs: 64 colours, a third of the bytes
        from PIL import Image

        page = Image.open(shot).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        page.save(os.environ["ARCHIVE_SEARCH_SCREENSHOT"], optimize=True)
