"""The chat page in headless Chromium (selenium): the API key given in the address, picking a
model, an answer streaming in, stopping one, the conversation after a reload, model text that
can't inject HTML, Markdown blocks, the errors of a refused key, a starting model and a rate
limit, rename, export, delete and import, a narrow screen, and the Content-Security-Policy.
The service comes from the `chat_service` fixture. A screenshot of the page is saved into
$CHATAI_SCREENSHOT_DIR, or the test's temporary folder, and its path printed."""

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


def open_browser(tmp_path_factory, base_url, api_key):
    """Chromium with the page's origin holding the API key."""
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
    driver.download_dir = tmp_path_factory.mktemp("downloads")
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(driver.download_dir)})
    driver.get(f"{base_url}/")
    driver.execute_script("localStorage.setItem('chatai.apiKey', arguments[0])", api_key)
    return driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory, chat_service):
    driver = open_browser(tmp_path_factory, *chat_service)
    yield driver
    driver.quit()


def save_screenshot(driver, directory, name):
    """Saves the page as NAME.png into $CHATAI_SCREENSHOT_DIR or `directory`, and prints where."""
    directory = pathlib.Path(os.environ.get("CHATAI_SCREENSHOT_DIR", directory))
    directory.mkdir(parents=True, exist_ok=True)
    shot = directory / f"{name}.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10000
    print(f"chat page screenshot: {shot}")


def wait(driver, condition, timeout=30, message=""):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition, message)


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


def notice(driver):
    element = driver.find_element(By.ID, "notice")
    return element.text if element.is_displayed() else ""


def new_chat(driver, model):
    driver.find_element(By.ID, "new-chat").click()
    wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "#messages .message"),
         message="the new conversation is not empty")
    pick_model(driver, model)


def titles(driver):
    return [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#conversation-list button")]


def pick_model(driver, model):
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'#model option[value="{model}"]'),
         message=f"{model} is not in the model picker")
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    assert driver.find_element(By.ID, "model-state").text in ("ready", "starting")


def test_key_in_the_address_is_stored_and_removed(browser, chat_service):
    base_url, api_key = chat_service
    browser.execute_script("localStorage.clear()")
    browser.get(f"{base_url}/#key={api_key}")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), message="no models listed")
    assert browser.current_url == f"{base_url}/"
    assert browser.execute_script("return localStorage.getItem('chatai.apiKey')") == api_key
    options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#model option")]
    assert options == ["smollm2 (ready)", "echo (ready)", "starting (starting)", "limited (ready)"]


def test_stream_stop_and_reload(browser, chat_service):
    stream_stop_and_reload(browser, chat_service[0])


def stream_stop_and_reload(browser, base_url):
    """Sends a message, sees the answer grow, stops it, lets a second run to its end, reloads."""
    browser.get(f"{base_url}/")
    pick_model(browser, "smollm2")
    type_message(browser, "Write a long story about a cat who sails around the world.")

    # The answer streams in: its text grows while it is still streaming.
    wait(browser, lambda d: len(answer_text(d)) > 0, timeout=120, message="no answer started")
    lengths = []
    for _ in range(100):
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
    assert "Write a long story about a cat who sails around the world." in titles(browser)
    restored = [a.find_element(By.CSS_SELECTOR, ".content").text for a in answers(browser)]
    assert restored == [stopped_text, second_text]
    assert [a.get_attribute("data-state") for a in answers(browser)] == ["stopped", "done"]
    users = browser.find_elements(By.CSS_SELECTOR, '#messages .message[data-role="user"] .content')
    assert [u.text for u in users][0] == "Write a long story about a cat who sails around the world."


def test_model_text_is_never_html(browser, chat_service):
    base_url, _ = chat_service
    browser.get(f"{base_url}/")
    new_chat(browser, "echo")
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


def test_markdown_blocks(browser, chat_service):
    base_url, _ = chat_service
    browser.get(f"{base_url}/")
    new_chat(browser, "echo")
    text = "# Title\n\n- a\n- b *em*\n\n1. one\n2. two\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n> quoted\n\n---\nend"
    browser.execute_script("document.getElementById('prompt').value = arguments[0]", text)
    type_message(browser)
    wait(browser, lambda d: last_answer(d) is not None and last_answer(d).get_attribute("data-state") == "done")
    content = last_answer(browser).find_element(By.CSS_SELECTOR, ".content")
    tags = browser.execute_script("return [...arguments[0].children].map((e) => e.tagName)", content)
    assert tags == ["H1", "UL", "OL", "DIV", "BLOCKQUOTE", "HR", "P"]
    assert [li.text for li in content.find_elements(By.CSS_SELECTOR, "ul li")] == ["a", "b em"]
    assert content.find_element(By.CSS_SELECTOR, "ul em").text == "em"
    assert [li.text for li in content.find_elements(By.CSS_SELECTOR, "ol li")] == ["one", "two"]
    cells = content.find_elements(By.CSS_SELECTOR, "th, td")
    assert [c.get_attribute("textContent") for c in cells] == ["x", "y", "1", "2"]
    assert content.find_element(By.TAG_NAME, "blockquote").get_attribute("textContent") == "quoted"


def test_wrong_key_asks_for_the_key(browser, chat_service):
    base_url, api_key = chat_service
    browser.get(f"{base_url}/")
    browser.execute_script("localStorage.setItem('chatai.apiKey', 'sk-wrong')")
    browser.refresh()
    wait(browser, lambda d: "did not accept the API key" in notice(d), message="no request for the key")
    assert browser.find_element(By.ID, "key-settings").get_attribute("open") is not None
    field = browser.switch_to.active_element
    assert field.get_attribute("id") == "api-key"
    assert not browser.find_elements(By.CSS_SELECTOR, "#model option")
    field.send_keys(api_key, Keys.TAB)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option") and not notice(d),
         message="the key was not taken")
    assert browser.execute_script("return localStorage.getItem('chatai.apiKey')") == api_key
    assert field.get_attribute("value") == ""


def test_starting_model_is_asked_again(browser, chat_service):
    base_url, _ = chat_service
    browser.get(f"{base_url}/")
    new_chat(browser, "starting")
    type_message(browser, "hello once more")
    wait(browser, lambda d: "starting is starting. Asking again in 1 s" in notice(d), message="no notice")
    wait(browser, lambda d: last_answer(d) is not None and last_answer(d).get_attribute("data-state") == "done",
         message="no answer after the model started")
    assert answer_text(browser) == "hello once more" and not notice(browser)


def test_rate_limit_is_explained_and_retried(browser, chat_service):
    base_url, _ = chat_service
    browser.get(f"{base_url}/")
    new_chat(browser, "limited")
    type_message(browser, "are you there")
    wait(browser, lambda d: "Too many requests" in notice(d), message="no rate limit notice")
    assert "Try again in 7 s." in notice(browser) and not answers(browser)
    retry = browser.find_element(By.ID, "notice-retry")
    assert retry.is_displayed()
    pick_model(browser, "echo")
    retry.click()
    wait(browser, lambda d: last_answer(d) is not None and last_answer(d).get_attribute("data-state") == "done",
         message="no answer after the retry")
    assert answer_text(browser) == "are you there" and not notice(browser)


def test_network_error_is_explained_and_retried(browser, chat_service):
    base_url, _ = chat_service
    browser.get(f"{base_url}/")
    new_chat(browser, "echo")
    browser.set_network_conditions(offline=True, latency=0, download_throughput=-1, upload_throughput=-1)
    try:
        type_message(browser, "still there?")
        wait(browser, lambda d: "Network error" in notice(d), message="no network error notice")
    finally:
        browser.delete_network_conditions()
    assert "the service could not be reached" in notice(browser) and not answers(browser)
    browser.find_element(By.ID, "notice-retry").click()
    wait(browser, lambda d: last_answer(d) is not None and last_answer(d).get_attribute("data-state") == "done",
         message="no answer after the retry")
    assert answer_text(browser) == "still there?" and not notice(browser)


def import_file(driver, path):
    field = driver.find_element(By.ID, "import-file")
    driver.execute_script("arguments[0].hidden = false", field)
    field.send_keys(str(path))
    driver.execute_script("arguments[0].hidden = true", field)


def test_rename_export_delete_import(browser, chat_service, tmp_path):
    base_url, _ = chat_service
    browser.get(f"{base_url}/")
    new_chat(browser, "echo")
    type_message(browser, "remember this")
    wait(browser, lambda d: last_answer(d) is not None and last_answer(d).get_attribute("data-state") == "done")

    browser.find_element(By.CSS_SELECTOR, "#chat-settings summary").click()
    title = browser.find_element(By.ID, "title")
    title.send_keys(Keys.CONTROL, "a", Keys.CONTROL, "Renamed chat", Keys.TAB)
    wait(browser, lambda d: titles(d)[0] == "Renamed chat", message="not renamed")

    browser.find_element(By.ID, "export").click()
    exported = wait(browser, lambda d: next(iter(d.download_dir.glob("chats-*.json")), None), message="no export")
    data = json.loads(exported.read_text())
    assert data["version"] == 1 and "Renamed chat" in [c["title"] for c in data["conversations"]]
    assert all("id" not in c for c in data["conversations"])
    renamed = next(c for c in data["conversations"] if c["title"] == "Renamed chat")
    assert renamed["messages"] == [{"role": "user", "content": "remember this"},
                                   {"role": "assistant", "content": "remember this", "model": "echo"}]

    browser.find_element(By.ID, "delete-chat").click()
    browser.switch_to.alert.accept()
    wait(browser, lambda d: "Renamed chat" not in titles(d), message="not deleted")

    stored = browser.execute_script("return localStorage.getItem('chatai.conversations')")
    for content, message in [
        ('{"conversations": [{"messages": [{"role": "robot", "content": "x"}]}]}',
         'conversations[0].messages[0].role must be "user", "assistant" or "system"'),
        ('{"conversations": [{"messages": [], "temperature": 9}]}',
         "conversations[0].temperature must be a number from 0 to 2"),
        ("[1, 2]", 'the file must hold {"conversations": [...]}'),
        ("not json", "the file is not JSON"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        import_file(browser, bad)
        wait(browser, lambda d: "Nothing was imported" in notice(d), message=content)
        assert message in notice(browser)
        assert browser.execute_script("return localStorage.getItem('chatai.conversations')") == stored
        browser.execute_script("document.getElementById('notice').hidden = true")

    import_file(browser, exported)
    count = len(data["conversations"])
    wait(browser, lambda d: f"Imported {count} conversation{'' if count == 1 else 's'}." in notice(d),
         message="not imported")
    assert "Renamed chat" in titles(browser)
    next(b for b in browser.find_elements(By.CSS_SELECTOR, "#conversation-list button")
         if b.text == "Renamed chat").click()
    users = browser.find_elements(By.CSS_SELECTOR, "#messages .message .content")
    assert [u.text for u in users] == ["remember this", "remember this"]


def test_narrow_screen(browser, chat_service):
    base_url, _ = chat_service
    browser.set_window_size(390, 800)
    try:
        browser.get(f"{base_url}/")
        sidebar = browser.find_element(By.ID, "sidebar")
        toggle = browser.find_element(By.ID, "toggle-sidebar")
        wait(browser, lambda d: not sidebar.is_displayed(), message="the sidebar covers the chat")
        prompt = browser.find_element(By.ID, "prompt")
        bottom = prompt.rect["y"] + prompt.rect["height"]
        assert prompt.is_displayed() and bottom <= browser.execute_script("return innerHeight")
        toggle.click()
        assert sidebar.is_displayed() and toggle.get_attribute("aria-expanded") == "true"
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        wait(browser, lambda d: not sidebar.is_displayed(), message="Escape did not close the sidebar")
        assert toggle.get_attribute("aria-expanded") == "false"
    finally:
        browser.set_window_size(1200, 900)


def test_page_runs_under_its_content_security_policy(browser, chat_service, tmp_path):
    base_url, _ = chat_service
    browser.get_log("browser")  # only what this load logs counts
    browser.get(f"{base_url}/")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), message="no models listed")
    logs = browser.get_log("browser")
    assert not [e for e in logs if "Content Security Policy" in e["message"] or e["level"] == "SEVERE"], \
        json.dumps(logs, indent=1)
    save_screenshot(browser, tmp_path, "chat_page")
