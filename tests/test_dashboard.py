"""The dashboard in a real browser (issue 16): headless Chromium (Selenium, Debian's
chromedriver) against the API served over TLS on a loopback port, in front of a cluster of
three Up hosts (fake flavor) whose passes run in a thread. An operator signs in, sees the
hosts, puts one into maintenance from the page and follows the operation to its end; the
store agrees. A viewer sees the actions disabled; a bad token and event text carrying
markup show as text. ``CLUSTERCORE_SCREENSHOTS=1`` saves docs/dashboard.png and
docs/dashboard-maintenance.png.

The browser trusts exactly the server's self-signed key (``--ignore-certificate-errors-spki-list``
with its SPKI digest), not every certificate.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from clustercore import HostState
from clustercore.api import ApiServer, create_app
from clustercore.events import Event

from .api_support import Env, env

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PORTS = range(18100, 18200)
DOCS = Path(__file__).resolve().parent.parent / "docs"
SHOTS = os.environ.get("CLUSTERCORE_SCREENSHOTS", "") not in ("", "0")
MOVED = ("web1", "web2", "db1")  # on h1, moved by its maintenance

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian: chromium chromium-driver)")


@attrs.define
class Ticker:
    """The cluster's passes (heartbeats, a second of fake time, a reconcile pass), every
    ``interval`` seconds in a thread while running; paused, the test steps it itself."""

    env: Env
    interval: float = 0.3
    running: threading.Event = attrs.field(factory=threading.Event)
    done: threading.Event = attrs.field(factory=threading.Event)
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    thread: threading.Thread | None = None

    def start(self) -> Ticker:
        self.running.set()
        self.thread = threading.Thread(target=self._run, name="dashboard-ticker", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            if self.running.is_set():
                with self.lock:
                    self.env.tick()

    def pause(self) -> None:
        self.running.clear()
        with self.lock:  # a pass under way ends first
            pass

    def resume(self) -> None:
        self.running.set()

    def step(self, n: int = 1) -> None:
        with self.lock:
            self.env.tick(n)

    def stop(self) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join(10)


@attrs.define
class Site:
    env: Env
    ticker: Ticker
    server: ApiServer
    browser: WebDriver

    def open(self) -> None:
        self.browser.get(self.server.url + "/")

    def css(self, selector: str) -> list[WebElement]:
        return self.browser.find_elements(By.CSS_SELECTOR, selector)

    def until(self, what: str, check: Callable[[], object], timeout: float = 10) -> None:
        def ok(_: WebDriver) -> bool:
            try:
                return bool(check())
            except StaleElementReferenceException:  # re-rendered meanwhile: look again
                return False
        WebDriverWait(self.browser, timeout, poll_frequency=0.1).until(ok, f"the dashboard never showed {what}")

    def text(self, selector: str) -> str:
        found = self.css(selector)
        return found[0].text if found else ""

    def shown(self, selector: str) -> bool:
        found = self.css(selector)
        return bool(found) and found[0].is_displayed()

    def sign_in(self, token: str) -> None:
        """Sign in with ``token`` (signing out first when the tab is signed in)."""
        self.until("the sign-in box or a signed-in page", lambda: self.shown("#signin-box") or self.shown("#signout"))
        if self.shown("#signout"):
            self.css("#signout")[0].click()
        box = self.css("#token")[0]
        box.clear()
        box.send_keys(token)
        self.css("#signin-button")[0].click()

    def shoot(self, name: str) -> None:
        if SHOTS:
            self.browser.save_screenshot(str(DOCS / name))


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def spki_digest(cert: Path) -> str:
    """What --ignore-certificate-errors-spki-list wants: base64 SHA-256 of the public key."""
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def chromium(profile: Path, trusted_key: str) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", "--window-size=1440,1080", f"--user-data-dir={profile}",
                f"--ignore-certificate-errors-spki-list={trusted_key}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def cluster() -> Env:
    """Three Up hosts: web1, web2, db1 on h1, cache1 on h2, batch1 on h3."""
    e = env(MOVED)
    for name, host in (("cache1", "h2"), ("batch1", "h3")):
        e.cluster.submit({"name": name, "flavor": "fake", "requests": {"cpu": 1, "memory": 64}, "pinned": [host]})
        e.cluster.update_workload(name, lambda w: attrs.evolve(w, pinned=frozenset()))
    return e


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver
    root = Path(tempfile.mkdtemp(prefix="dashboard-"))
    e = cluster()
    ticker = Ticker(e).start()
    server: ApiServer | None = None
    browser: WebDriver | None = None
    try:
        server = ApiServer(create_app(e.cluster), f"127.0.0.1:{free_port()}", state_dir=root / "state").start()
        browser = chromium(root / "profile", spki_digest(server.cert))
        browser.set_page_load_timeout(15)
        yield Site(e, ticker, server, browser)
    finally:
        if browser is not None:
            with contextlib.suppress(WebDriverException):
                browser.quit()  # before the server: its open event stream would hold the shutdown
        if server is not None:
            server.stop()
        ticker.stop()
        shutil.rmtree(root, ignore_errors=True)


def host_state(site: Site, host: str) -> str:
    return site.text(f'#hosts tr[data-host="{host}"] [data-field="state"]')


def group(site: Site, host: str) -> list[str]:
    return [row.get_attribute("data-workload") or ""
            for row in site.css(f'#workloads [data-group="{host}"] tr[data-workload]')]


def test_an_operator_puts_a_host_into_maintenance_from_the_dashboard(site: Site) -> None:
    e = site.env
    site.open()
    site.sign_in("cc_0000000000000000_not-a-token")
    site.until("the refusal", lambda: "Unauthorized" in site.text("#message"))
    assert site.css("#signin-box")[0].is_displayed() and not site.css("#dashboard")[0].is_displayed()

    site.sign_in(e.tokens["operator"])
    site.until("the operator signed in", lambda: site.text("#me-role") == "operator")
    site.until("three Up hosts", lambda: [(r.get_attribute("data-host"), r.get_attribute("data-state"))
                                          for r in site.css("#hosts tr[data-host]")]
               == [("h1", "Up"), ("h2", "Up"), ("h3", "Up")])
    site.until("workloads grouped by host", lambda: (sorted(group(site, "h1")), group(site, "h2"), group(site, "h3"))
               == (sorted(MOVED), ["cache1"], ["batch1"]))
    assert site.text('#hosts tr[data-host="h1"] [data-field="workloads"]') == "db1, web1, web2"
    site.until("the live stream", lambda: site.css("#live")[0].get_attribute("data-live") == "on")
    assert site.css("#activate-h1") == []  # Up: nothing to activate
    site.shoot("dashboard.png")

    site.ticker.pause()  # the operation waits in Pending until the next pass
    site.css("#maintenance-h1")[0].click()
    row = '#operations tr[data-kind="maintenance"][data-target="h1"]'
    site.until("the maintenance Pending", lambda: site.css(row) and site.css(row)[0].get_attribute("data-state")
               == "Pending")
    assert "Maintenance of h1 requested" in site.text("#message")
    op_id = site.css(row)[0].get_attribute("data-operation") or ""
    assert e.cluster.operation(op_id).by == "operator"
    site.ticker.step(2)  # draining: two of its three workloads moved
    site.until("the drain under way", lambda: site.css(row)[0].get_attribute("data-state") == "Running"
               and site.text(f"{row} [data-field=percent]") == "67%" and host_state(site, "h1")
               == "PreparingForMaintenance" and len(group(site, "h1")) == 1)
    assert site.text(f"{row} [data-field=step]") == "1 workload(s) left on h1"
    assert site.css(f"{row} progress")[0].get_attribute("value") == "67"
    cancel = site.css(f'{row} button[data-action="cancel-operation"]')
    assert cancel and cancel[0].is_enabled()
    assert site.css('#cancel-maintenance-h1')[0].is_enabled()
    site.shoot("dashboard-maintenance.png")

    site.ticker.resume()
    site.until("the maintenance done", lambda: site.css(row)[0].get_attribute("data-state") == "Succeeded"
               and host_state(site, "h1") == "Maintenance" and group(site, "h1") == [], timeout=15)
    assert site.text(f"{row} [data-field=percent]") == "100%" and site.css(f"{row} button") == []
    assert site.text(f"{row} [data-field=outcome]") == "h1 in maintenance"
    site.until("its events", lambda: site.css('#events li[data-kind="drained"][data-subject="host/h1"]'))
    moved = set(group(site, "h2")) | set(group(site, "h3"))
    assert set(MOVED) <= moved and {"cache1", "batch1"} <= moved
    activate = site.css("#activate-h1")[0]
    assert not activate.is_enabled() and "needs role admin" in (activate.get_attribute("title") or "")
    # The store agrees with the page.
    assert e.cluster.operation(op_id).state.value == "Succeeded"
    assert e.cluster.host("h1").state is HostState.MAINTENANCE
    for name in MOVED:
        placement = e.cluster.state.placement(name)
        assert placement is not None and placement.value.host in ("h2", "h3")
    # A migration to a chosen host.
    Select(site.css("#migrate-target-cache1")[0]).select_by_value("h3")
    site.css("#migrate-cache1")[0].click()
    site.until("cache1 moved to h3", lambda: "cache1" in group(site, "h3"))
    placement = e.cluster.state.placement("cache1")
    assert placement is not None and placement.value.host == "h3"
    # An event arrives live, its markup shown as text.
    markup = '<img id="injected" src="x"> & <b>bold</b>'
    e.cluster.events.record(Event(e.clock.now(), "cluster", "note", reason=markup))
    site.until("the new event", lambda: site.text('#events li[data-kind="note"] .reason') == markup)
    assert site.css("#events li")[0].get_attribute("data-kind") == "note"  # newest first
    assert not site.css("#injected") and not site.css("#events b")


def test_a_viewer_sees_every_action_disabled(site: Site) -> None:
    site.open()
    site.sign_in(site.env.tokens["viewer"])
    site.until("the viewer signed in", lambda: site.text("#me-role") == "viewer" and site.css("#maintenance-h2"))
    site.browser.refresh()  # the token is kept in the tab's session storage
    site.until("the viewer still signed in", lambda: site.text("#me-role") == "viewer"
               and len(site.css("#hosts tr[data-host]")) == 3 and site.css("#workloads tr[data-workload]"))
    buttons = site.css("#dashboard button[data-action]")
    assert {b.get_attribute("data-action") for b in buttons} >= {"maintenance", "migrate"}
    assert all(not b.is_enabled() for b in buttons)
    assert "needs role operator" in (site.css("#maintenance-h2")[0].get_attribute("title") or "")
    assert all(not s.is_enabled() for s in site.css("#dashboard select, #dashboard input[type=checkbox]"))
    site.css("#signout")[0].click()
    site.until("signed out", lambda: site.css("#signin-box")[0].is_displayed())
    assert site.browser.execute_script("return sessionStorage.getItem('clustercore.token')") is None


def test_the_event_stream_resumes_after_the_server_comes_back(site: Site) -> None:
    e = site.env
    site.open()
    site.sign_in(e.tokens["viewer"])
    site.until("the live stream", lambda: site.css("#live")[0].get_attribute("data-live") == "on")
    listen = f"{site.server.host}:{site.server.port}"
    site.server.stop()
    site.until("the stream lost", lambda: site.css("#live")[0].get_attribute("data-live") == "off")
    e.cluster.events.record(Event(e.clock.now(), "cluster", "while-away", reason="recorded while the API was down"))
    site.server = ApiServer(create_app(e.cluster), listen, state_dir=site.server.cert.parent).start()
    site.until("the stream back", lambda: site.css("#live")[0].get_attribute("data-live") == "on", timeout=15)
    site.until("the event missed meanwhile", lambda: site.css('#events li[data-kind="while-away"]'))
    assert len(site.css('#events li[data-kind="while-away"]')) == 1
