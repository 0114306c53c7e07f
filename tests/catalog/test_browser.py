"""The real Neo4j Browser, served by the session's server, drawn in headless Chromium.

Debian's ``chromium`` and ``chromium-driver`` (installed by ``.ci/setup``) run under Selenium with
the driver's path given, so Selenium Manager never downloads a browser. The test logs in as a
researcher would, pastes the shipped stylesheet (``circuit-atlas query --style``) and the
``circuit_view`` query, and reads the drawn SVG: nodes, their kind colours and captions, and
relationship widths graded by effect. The screenshot lands in the test's temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from urllib.parse import urlparse

import pytest

from circuit_atlas import queries

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ATTENTION_HEAD_COLOUR = re.search(
    r"node\.AttentionHead \{[^#]*?\n\s*color: (#[0-9A-F]{6});", queries.stylesheet()
).group(1)
DRAWN_NODES = """
return [...arguments[0].querySelectorAll('svg.neod3viz g.node')].map(g => ({
  fill: g.querySelector('circle.b-outline').getAttribute('fill'),
  caption: [...g.querySelectorAll('text.caption')].map(t => t.textContent.trim()).join(' ')}))
"""
# A relationship's shaft is a path starting "M <x> <half width>"; its caption is the roles.
DRAWN_RELATIONSHIPS = """
return [...arguments[0].querySelectorAll('svg.neod3viz g.relationship')].map(g => ({
  width: 2 * Math.abs(parseFloat(g.querySelector('path.b-outline').getAttribute('d').split(' ')[2])),
  caption: [...g.querySelectorAll('text')].map(t => t.textContent.trim()).join(' ')}))
"""


class BrowserPage:
    """Neo4j Browser in headless Chromium: log in, type commands, wait for frames."""

    def __init__(self, url: str, timeout: float = 60):
        os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait

        missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
        if missing:
            pytest.fail(
                f"{', '.join(missing)} not found: install Debian's chromium and chromium-driver (.ci/setup does)"
            )
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.timeout = timeout
        self.wait = WebDriverWait(self.driver, timeout)
        self.url = url

    def css(self, selector: str, within=None):
        return (within or self.driver).find_elements("css selector", selector)

    def frames(self):
        """The result frames, newest first."""
        return self.css("[data-testid=stream] article[data-testid=frame]")

    def log_in(self, bolt_uri: str, user: str, password: str) -> None:
        """Fill the connect form (the URL pre-fills scheme, address and user) and submit it.

        The form re-renders while Browser probes the server, and a submit in that window is lost,
        so it is submitted again (Enter in the password field) until the stream says connected.
        """
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import WebDriverWait

        bolt = urlparse(bolt_uri)
        self.driver.get(f"{self.url}?connectURL=bolt://{user}@{bolt.hostname}:{bolt.port}")
        self.wait.until(lambda _: self.css("[data-testid=password]"))[0].send_keys(password)

        def connected(_) -> bool:
            if "You are connected as user" in self.css("[data-testid=stream]")[0].text:
                return True
            for field in self.css("[data-testid=password]"):
                field.send_keys(Keys.ENTER)
            return False

        # Elements are found afresh on every poll; one that re-renders between find and use is stale,
        # which only means: look again.
        WebDriverWait(
            self.driver, self.timeout, poll_frequency=3, ignored_exceptions=(StaleElementReferenceException,)
        ).until(connected)

    def run(self, command: str):
        """Type one line into the editor, run it (Ctrl+Enter) and return its frame."""
        from selenium.webdriver.common.keys import Keys

        before = len(self.frames())
        self.css("[data-testid=activeEditor]")[0].click()
        editor = self.css("[data-testid=activeEditor] textarea")[0]
        editor.send_keys(command)
        editor.send_keys(Keys.CONTROL, Keys.ENTER)
        if command == ":clear":
            self.wait.until(lambda _: not self.frames())
            return None
        self.wait.until(lambda _: len(self.frames()) > before)
        return self.frames()[0]

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(neo4j_server):
    if not neo4j_server.browser_url:
        pytest.fail("The session's Neo4j has no known Browser address: set NEO4J_BROWSER_URL along with NEO4J_URI.")
    page = BrowserPage(neo4j_server.browser_url)
    yield page
    page.close()


def test_browser_draws_the_circuit_with_the_stylesheet(catalog, browser, neo4j_settings, tmp_path):
    browser.log_in(neo4j_settings.uri, neo4j_settings.user, neo4j_settings.password)
    browser.run(":clear")
    style = browser.run(queries.style_command())
    browser.wait.until(lambda _: "node.AttentionHead {" in style.text)  # Browser echoes the sheet it parsed
    browser.run(":params {checkpoint: 'm@1', slice: 'rep', min_effect: 0.5, min_attribution: 0.01}")
    frame = browser.run(" ".join(queries.library()["circuit_view"].body.split()))  # one line for the editor
    browser.wait.until(
        lambda _: (
            len(browser.css("svg.neod3viz g.node", frame)) == 6
            and len(browser.css("svg.neod3viz g.relationship", frame)) == 5
        )
    )

    nodes = browser.driver.execute_script(DRAWN_NODES, frame)
    assert sorted(n["caption"] for n in nodes) == ["A", "B", "C", "out", "out", "out"]  # each head and its write
    assert {n["fill"].upper() for n in nodes if n["caption"] != "out"} == {ATTENTION_HEAD_COLOUR}
    drawn = browser.driver.execute_script(DRAWN_RELATIONSHIPS, frame)
    widths = {r["caption"]: r["width"] for r in drawn if r["caption"] != "HAS_SUBSPACE"}
    assert widths == {"k": 8.0, "v": 4.0}  # CARRIES_STRONG and CARRIES_MEDIUM
    assert sum(r["caption"] == "HAS_SUBSPACE" for r in drawn) == 3

    screenshot = tmp_path / "circuit_view.png"
    assert browser.driver.save_screenshot(str(screenshot))
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 1000 and height >= 700, (width, height)
    print(f"Browser screenshot: {screenshot}")
