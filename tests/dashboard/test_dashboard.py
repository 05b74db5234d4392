"""The operator dashboard as a user meets it: `mentor3ad dashboard` started as a process over a recorded run,
looked at in a real headless Chromium (selenium + Debian's chromedriver). Screenshots are written to the
test's tmp dir (paths printed; MENTOR3AD_SCREENSHOT_DIR copies them elsewhere)."""
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import run_mentor3ad
from mentor3ad.package_files import package_executable
from mentor3ad.records import ModelRecord, RecordWriter
from mentor3ad.types import InspectionResult
from record_helpers import MODEL_ID, THRESHOLD, calibration_scores, fill_record

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TOKEN = "s3cret-token-for-tests"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, headers=None):
    """(status, headers, body) of a GET."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


class Dashboard:
    def __init__(self, record: Path, *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process = subprocess.Popen([package_executable("mentor3ad"), "dashboard", "--record", str(record),
                                         "--port", str(self.port), "--refresh-s", "0.5", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stdout.read()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("the dashboard did not start listening within 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def recorded_run(tmp_path):
    """A record of 31 parts (6 FAIL, 1 ERROR) of one registered model, as a cell's node would leave it."""
    record = tmp_path / "line.sqlite"
    writer = RecordWriter(record, cell="cell-1")
    writer.register_model(ModelRecord(MODEL_ID, THRESHOLD, 0.01, "tail", calibration_scores(), 0.004))
    fill_record(writer, 30)
    writer.submit(InspectionResult.error("no 3D data within 2.0 s of the image", model_id=MODEL_ID), part_id="P-ERR01")
    assert writer.close()
    return record


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements/test.txt)")
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Chromium and its driver are not installed (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="m3ad-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,2200",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, timeout=30.0, what="the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition(driver)
            if value:
                return value
        except Exception:  # noqa: BLE001 - elements come and go while Dash re-renders
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not show up within {timeout} s")


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _shows(driver, element_id: str, *texts: str) -> None:
    """Wait until the element's text holds every one of ``texts`` (the page re-renders every 0.5 s)."""
    _wait(driver, lambda d: all(t in _text(d, element_id) for t in texts), what=f"{texts} in #{element_id}")


def _screenshot(driver, path: Path) -> None:
    driver.save_screenshot(str(path))
    print(f"\nscreenshot: {path}")
    if os.environ.get("MENTOR3AD_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["MENTOR3AD_SCREENSHOT_DIR"]) / path.name)


def test_page_shows_the_recorded_run_its_failures_and_new_results(recorded_run, browser, tmp_path):
    dashboard = Dashboard(recorded_run)
    try:
        browser.get(dashboard.url)
        _wait(browser, lambda d: _text(d, "count-FAIL") == "6" and _text(d, "count-PASS") == "24", what="the counts")
        _shows(browser, "count-ERROR", "1")
        _shows(browser, "yield", "77.4 %")  # 24 PASS of 31 inspected parts
        loaded = ("return Array.from(document.querySelectorAll('#failures img.overlay'))"
                  ".filter(i => i.complete && i.naturalWidth > 0).map(i => i.src)")
        overlays = _wait(browser, lambda d: d.execute_script(loaded), what="a FAIL's overlay")  # one call: no stale element
        assert "/evidence/FAIL/" in overlays[0] and overlays[0].endswith("_overlay.png")
        _shows(browser, "failures", "P-00029", "#1: pixels", "mm²")
        _shows(browser, "stream-table", "P-00029", "P-ERR01", "no 3D data within 2.0")
        _shows(browser, "drift-table", "OK", "1 %", "0.4 %")
        _wait(browser, lambda d: d.find_elements("css selector", "#scores .main-svg"), what="the score chart")
        _screenshot(browser, tmp_path / "dashboard_recorded_run.png")

        writer = RecordWriter(recorded_run, cell="cell-2")  # the line goes on: ten more parts, two of them FAIL
        fill_record(writer, 10, start=30)
        assert writer.close()
        _wait(browser, lambda d: _text(d, "count-FAIL") == "8" and "P-00039" in _text(d, "stream-table"),
              what="the new results")
        _shows(browser, "count-PASS", "32")
        _shows(browser, "stream-table", "cell-2")
        _screenshot(browser, tmp_path / "dashboard_updated.png")

        search = browser.find_element("id", "search-part")
        search.send_keys("p-0001\n")
        rows = _wait(browser, lambda d: d.find_elements("css selector", "#search-table tbody tr"), what="the search")
        assert len(rows) == 10 and "P-00019" in rows[0].text
        href = browser.find_element("id", "export-link").get_attribute("href")
        assert "part=p-0001" in href
        status, headers, body = _get(href)
        assert status == 200 and headers["Content-Type"].startswith("text/csv")
        assert len(body.decode().splitlines()) == 11 and body.decode().startswith("decided_utc,part_id")

        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        foreign = [name for name in resources if not name.startswith(dashboard.url)]
        assert resources and not foreign, f"the page loaded from elsewhere (it must work offline): {foreign}"
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        dashboard.stop()


def test_access_token_guards_every_route(recorded_run):
    code, _, output = run_mentor3ad("dashboard", "--record", recorded_run, "--host", "0.0.0.0", timeout=60)
    assert code == 2 and "give an access token" in output
    dashboard = Dashboard(recorded_run, "--token", TOKEN)
    try:
        for path in ("", "_dash-layout", "export.csv", "evidence/FAIL/x.png"):
            status, _, body = _get(dashboard.url + path)
            assert status == 401 and b"access token required" in body, path
        status, headers, _ = _get(dashboard.url + "?token=" + TOKEN)
        assert status == 200 and "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";")[0]
        assert _get(dashboard.url + "export.csv", {"Cookie": cookie})[0] == 200
        assert _get(dashboard.url + "export.csv", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert _get(dashboard.url + "export.csv", {"Authorization": "Bearer wrong-token-123"})[0] == 401
        assert _get(dashboard.url + "evidence/../line.sqlite", {"Cookie": cookie})[0] == 404  # nothing outside evidence
    finally:
        dashboard.stop()


def test_the_dashboard_waits_for_the_record_an_inspector_creates(tmp_path):
    """``--wait-s`` (inspect.launch.py dashboard:=true starts it beside the inspector that creates the record)."""
    import threading

    record = tmp_path / "cell.sqlite"
    code, _, out = run_mentor3ad("dashboard", "--record", record, "--wait-s", "1", "--port", _free_port(), timeout=60)
    assert code != 0 and f"no inspection record at {record}" in out and "Traceback" not in out, out

    def inspector():  # creates the record a little later
        time.sleep(2.0)
        writer = RecordWriter(record, cell="cell-1")
        fill_record(writer, 3)
        assert writer.close()

    thread = threading.Thread(target=inspector)
    thread.start()
    dashboard = Dashboard(record, "--wait-s", "60")
    try:
        thread.join()
        status, _, body = _get(dashboard.url + "export.csv")
        assert status == 200 and len(body.decode().strip().splitlines()) == 1 + 3, body
    finally:
        dashboard.stop()
