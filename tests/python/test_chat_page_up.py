"""The chat page served by the real gateway of `chatai up` (the local gate and a local
`chatai serve` with the real model behind it), in headless Chromium: the key from the address,
the model's state, an answer streaming in, one stopped mid-stream, the conversation after a
reload, the page's security headers. A screenshot is saved as in test_chat_page.py."""

import json
import pathlib
import signal
import subprocess
import urllib.request

import pytest
from selenium.webdriver.common.by import By

from test_chat_page import open_browser, save_screenshot, stream_stop_and_reload, wait


@pytest.fixture(scope="module")
def up_service(build_dir, test_model, tmp_path_factory):
    proc = subprocess.Popen([str(pathlib.Path(build_dir) / "bin" / "chatai"), "up", "--model", str(test_model),
                             "--port", "0", "--state-dir", str(tmp_path_factory.mktemp("up")), "--ctx", "1024"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        event = json.loads(proc.stdout.readline())
        yield event["url"], event["api_key"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def up_browser(tmp_path_factory, up_service):
    driver = open_browser(tmp_path_factory, *up_service)
    yield driver
    driver.quit()


def test_the_gateway_serves_the_page_with_its_security_headers(up_service):
    base_url, _ = up_service
    with urllib.request.urlopen(f"{base_url}/") as response:
        headers = response.headers
        page = response.read().decode()
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"].startswith("text/html") and "<script" in page


def test_chat_through_chatai_up(up_browser, up_service, tmp_path):
    base_url, api_key = up_service
    up_browser.execute_script("localStorage.clear()")
    up_browser.get(f"{base_url}/#key={api_key}")
    wait(up_browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), message="no models listed")
    assert up_browser.current_url == f"{base_url}/"
    options = [o.text for o in up_browser.find_elements(By.CSS_SELECTOR, "#model option")]
    assert options in (["smollm2 (ready)"], ["smollm2 (starting)"]), options

    stream_stop_and_reload(up_browser, base_url)
    save_screenshot(up_browser, tmp_path, "chat_page_up")
