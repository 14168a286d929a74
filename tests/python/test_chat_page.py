"""The chat page in headless Chromium (selenium): picking a model, a streamed answer, stopping
one, the conversation after a reload, model text that can't inject HTML, and the API key given
in the address. The service comes from the `chat_service` fixture."""

import json
import os
import pathlib
import time

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from chat_service import chat_service  # noqa: F401 (a fixture)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    assert pathlib.Path(CHROMIUM).exists() and pathlib.Path(CHROMEDRIVER).exists(), \
        "chromium and chromium-driver are not installed: run cmake/install-deps.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def wait(driver, condition, timeout=30, message=""):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d), message)


def answers(driver):
    return driver.find_elements(By.CSS_SELECTOR, '#messages .message[data-role="assistant"]')


def last_answer(driver):
    found = answers(driver)
    return found[-1] if found else None


def answer_text(driver):
    view = last_answer(driver)
    return view.find_element(By.CSS_SELECTOR, ".content").text if view else ""


def type_message(driver, *keys):
    prompt = driver.find_element(By.ID, "prompt")
    prompt.send_keys(*keys)
    prompt.send_keys(Keys.ENTER)


def pick_model(driver, model):
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'#model option[value="{model}"]'),
         message=f"{model} is not in the model picker")
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    assert driver.find_element(By.ID, "model-state").text == "ready"


def test_key_in_the_address_is_stored_and_removed(browser, chat_service):
    base_url, api_key = chat_service
    browser.get(f"{base_url}/#key={api_key}")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), message="no models listed")
    assert browser.current_url == f"{base_url}/"
    assert browser.execute_script("return localStorage.getItem('chatai.apiKey')") == api_key
    options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#model option")]
    assert options == ["smollm2 (ready)", "echo (ready)"]


def test_stream_stop_and_reload(browser, chat_service):
    base_url, _ = chat_service
    browser.get(f"{base_url}/")
    pick_model(browser, "smollm2")
    type_message(browser, "Write a long story about a cat who sails around the world.")

    # The answer streams in: its text grows while it is still streaming.
    wait(browser, lambda d: len(answer_text(d)) > 0, timeout=120, message="no answer started")
    lengths = []
    for _ in range(30):
        assert last_answer(browser).get_attribute("data-state") == "streaming"
        lengths.append(len(answer_text(browser)))
        if len(set(lengths)) >= 3:
            break
        time.sleep(0.1)
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths), lengths

    # Stop ends it mid-stream and the partial text stays.
    stop = browser.find_element(By.ID, "stop")
    assert stop.is_displayed() and not browser.find_element(By.ID, "send").is_displayed()
    stop.click()
    wait(browser, lambda d: last_answer(d).get_attribute("data-state") == "stopped", timeout=5)
    stopped_text = answer_text(browser)
    assert stopped_text
    time.sleep(1)
    assert answer_text(browser) == stopped_text
    assert browser.find_element(By.ID, "send").is_displayed() and not stop.is_displayed()
    assert "Stopped" in last_answer(browser).text

    # A second answer runs to its end.
    type_message(browser, "What is the capital of France? Answer in one sentence.")
    wait(browser, lambda d: len(answers(d)) == 2 and answers(d)[1].get_attribute("data-state") == "done",
         timeout=180, message="the second answer did not finish")
    second_text = answer_text(browser)
    assert second_text

    # After a reload the conversation is listed and shown again.
    browser.refresh()
    wait(browser, lambda d: len(answers(d)) == 2, message="the conversation was not restored")
    titles = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#conversation-list button")]
    assert "Write a long story about a cat who sails around the world." in titles
    restored = [a.find_element(By.CSS_SELECTOR, ".content").text for a in answers(browser)]
    assert restored == [stopped_text, second_text]
    assert [a.get_attribute("data-state") for a in answers(browser)] == ["stopped", "done"]
    users = browser.find_elements(By.CSS_SELECTOR, '#messages .message[data-role="user"] .content')
    assert [u.text for u in users][0] == "Write a long story about a cat who sails around the world."


def test_model_text_is_never_html(browser, chat_service):
    base_url, _ = chat_service
    browser.get(f"{base_url}/")
    browser.find_element(By.ID, "new-chat").click()
    wait(browser, lambda d: not answers(d), message="the new conversation is not empty")
    pick_model(browser, "echo")
    # Shift+Enter starts a new line; Enter sends.
    lines = ["<img src=x onerror=alert(1)> <script>window.injected = 1</script> **bold**",
             "[bad](javascript:alert(1)) [good](https://example.com/page) `<b>code</b>`",
             "```html", "<iframe src=/></iframe>", "```"]
    keys = []
    for line in lines:
        keys += [line, Keys.SHIFT, Keys.ENTER, Keys.SHIFT]
    type_message(browser, *keys[:-3])
    wait(browser, lambda d: last_answer(d) is not None and last_answer(d).get_attribute("data-state") == "done",
         message="the echo answer did not finish")

    messages = browser.find_element(By.ID, "messages")
    for tag in ("img", "script", "iframe", "b"):
        assert messages.find_elements(By.TAG_NAME, tag) == [], tag
    content = last_answer(browser).find_element(By.CSS_SELECTOR, ".content")
    assert "<img src=x onerror=alert(1)> <script>window.injected = 1</script>" in content.text
    assert content.find_element(By.TAG_NAME, "strong").text == "bold"
    assert content.find_element(By.CSS_SELECTOR, "p code").text == "<b>code</b>"
    assert content.find_element(By.CSS_SELECTOR, "pre code").text == "<iframe src=/></iframe>"
    links = content.find_elements(By.TAG_NAME, "a")
    assert [(a.get_attribute("href"), a.get_attribute("rel"), a.text) for a in links] == \
        [("https://example.com/page", "noopener noreferrer", "good")]
    assert "[bad](javascript:alert(1))" in content.text
    assert browser.execute_script("return window.injected") is None
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (raises when no alert is open)
    # The user's own message is plain text too.
    user = browser.find_elements(By.CSS_SELECTOR, '#messages .message[data-role="user"] .content')[-1]
    assert user.text.splitlines() == lines


def test_page_runs_under_its_content_security_policy(browser, chat_service, tmp_path):
    base_url, _ = chat_service
    browser.get_log("browser")  # only what this load logs counts
    browser.get(f"{base_url}/")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), message="no models listed")
    logs = browser.get_log("browser")
    assert not [e for e in logs if "Content Security Policy" in e["message"] or e["level"] == "SEVERE"], \
        json.dumps(logs, indent=1)
    directory = pathlib.Path(os.environ.get("CHATAI_SCREENSHOT_DIR", tmp_path))
    directory.mkdir(parents=True, exist_ok=True)
    shot = directory / "chat_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10000
    print(f"chat page screenshot: {shot}")
