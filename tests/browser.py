"""What the browser tests share: the app on a real port with a worker, a headless Debian Chromium, waits,
console errors and screenshots (saved under var/test-artifacts/ — look at them).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from ingest.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "var" / "test-artifacts"


def chromium() -> tuple[str, str] | None:
    b, d = shutil.which("chromium"), shutil.which("chromedriver")
    return (b, d) if b and d else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app on a real port (werkzeug, threaded) plus a worker applying the streams, both stoppable."""

    def __init__(self, settings, engine, r, city, role: str = "admin", area: str | None = None):
        from app import create_app

        self.app = create_app(settings)
        self.role, self.area = role, area
        self._logged_in: set[int] = set()  # the drivers that hold a session here
        self.settings, self.engine, self.r, self.city = settings, engine, r, city
        self.port = free_port()
        self.server = None
        self.start_worker()

    def start_worker(self):
        """The worker applying the streams, with its heartbeat as a worker process keeps one."""
        self.stop_worker = threading.Event()
        self.worker = threading.Thread(target=self._work, args=(self.stop_worker,), daemon=True)
        self.worker.start()

    def pause_worker(self):
        """The worker stops (cleanly: its heartbeat goes), the web server goes on answering."""
        self.stop_worker.set()
        self.worker.join(10)

    def _work(self, stop):
        from ingest.heartbeat import Heartbeat

        w = Worker(self.city, self.settings, self.engine, self.r, name="live")
        beat = Heartbeat(self.r, w.applier.keys, "live").start()
        try:
            while not stop.is_set():
                beat.ok(w.run_once(100))
        finally:
            beat.stop()

    def start(self):
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", self.port, self.app.server, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self, driver, path: str) -> None:
        """``driver.get`` of ``path`` here, logged in first (once per driver): a user of this server's role through
        the login form, or the wall's kiosk link for the ``screen`` role."""
        if id(driver) not in self._logged_in:
            self.login(driver)
        driver.get(self.url + path)

    def http(self):
        """A requests session logged in here through the login form (as this server's role, a person's)."""
        import re

        import requests

        from tests.accounts import PASSWORD, make_user

        if getattr(self, "_http", None) is None:
            name = make_user(self.app.server.config["GRIDWATCH_SETTINGS"], "admin" if self.role == "screen" else self.role,
                             self.area)
            s = requests.Session()
            page = s.get(self.url + "/login", timeout=10).text
            token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            s.post(self.url + "/login", data={"username": name, "password": PASSWORD, "csrf": token, "next": "/"},
                   timeout=10)
            s.headers["X-CSRFToken"] = s.cookies.get("_csrf_token", "")
            self._http = s
        return self._http

    def login(self, driver, role: str | None = None, area: str | None = None) -> None:
        from selenium.webdriver.common.by import By

        from dashboard import auth
        from tests.accounts import PASSWORD, make_user

        role = role or self.role
        if role == "screen":
            token = auth.create_screen_link(self.engine, self.city, "test-wall", area or self.area)
            driver.get(f"{self.url}/s/{token}")
        else:
            name = make_user(self.app.server.config["GRIDWATCH_SETTINGS"], role, area or self.area)
            driver.get(self.url + "/login")
            driver.find_element(By.ID, "username").send_keys(name)
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(lambda: "/login" not in driver.current_url and "/s/" not in driver.current_url, 20)
        self._logged_in.add(id(driver))

    def close(self):
        self.stop()
        self.stop_worker.set()
        self.worker.join(5)


def driver():
    """A headless Debian Chromium (the conftest's ``browser`` fixture); skipped, or failed on CI, without one."""
    found = chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing: `make test` installs them (Debian packages)")
        pytest.skip("chromium/chromedriver not installed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
        "window.__errs=[];window.addEventListener('error',function(e){window.__errs.push(String(e.message));});")})
    yield driver
    driver.quit()


def size(driver, w, h):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": False})


def wait(fn, timeout=15.0, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(step)
    return fn()


def errors(driver) -> list[str]:
    logged = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return logged + list(driver.execute_script("return window.__errs || []"))


def shot(driver, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def js(driver, script):
    return driver.execute_script(script)
