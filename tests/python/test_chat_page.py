"""The chat page in headless Chromium (selenium): the API key given in the address, picking a
model, an answer streaming in, stopping one, the conversation after a reload, model text that
can't inject HTML, Markdown blocks, an answer's reasoning and tool calls shown folded, the errors
of a refused key, a starting model and a rate limit, rename, export, delete and import, a narrow
screen, and the Content-Security-Policy. The service comes from the `chat_service` fixture; the
answers with reasoning and tool calls come from a stand-in model server behind the same page
server. Screenshots of the page are saved into $CHATAI_SCREENSHOT_DIR, or the test's temporary
folder, and their paths printed."""

import json
import math
import os
import pathlib
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from chat_service import chat_service, make_handler  # noqa: F401 (a fixture)

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


THINKER = "thinker"
REASONING = ["The user wants ", "<b>the weather</b> ", "<img src=x onerror=alert(1)>", " in Paris."]
CONTENT = ["I will ask ", "the weather service."]
WEATHER_ARGUMENTS = {"city": "<script>window.injected = 1</script>Paris", "unit": "celsius"}
TIME_ARGUMENTS = "zone=<Europe/Paris>"


def split(text, parts):
    size = math.ceil(len(text) / parts)
    return [text[i:i + size] for i in range(0, len(text), size)]


def make_thinker_handler(requests, resume):
    """A stand-in for `chatai serve` with one model, THINKER, which streams REASONING, waits for
    `resume`, then streams CONTENT and two tool calls, each split over several deltas. The body of
    every chat request is appended to `requests`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def send_json(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def event(self, delta, finish_reason=None):
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": THINKER, "choices": [choice]}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
            time.sleep(0.02)

        def do_GET(self):
            self.send_json({"object": "list", "data": [{"id": THINKER, "object": "model", "owned_by": "chatai"}]})

        def do_POST(self):
            requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.event({"role": "assistant", "content": ""})
            for piece in REASONING:
                self.event({"reasoning_content": piece})
            resume.wait(30)
            for piece in CONTENT:
                self.event({"content": piece})
            calls = [(0, "call_weather", "get_weather", split(json.dumps(WEATHER_ARGUMENTS), 4)),
                     (1, "call_time", "get_time", split(TIME_ARGUMENTS, 2))]
            for index, call_id, name, pieces in calls:
                self.event({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                            "function": {"name": name, "arguments": ""}}]})
                for piece in pieces:
                    self.event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            self.event({}, "tool_calls")
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler


@pytest.fixture(scope="module")
def thinker_service():
    """The page server of `chat_service` in front of the THINKER stand-in; yields (base_url,
    api_key, the chat requests the stand-in got, the event that lets its answers go on)."""
    requests, resume = [], threading.Event()
    api_key = "sk-" + secrets.token_hex(16)
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), make_thinker_handler(requests, resume))]
    servers.append(ThreadingHTTPServer(("127.0.0.1", 0), make_handler(api_key, servers[0].server_address[1])))
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{servers[1].server_address[1]}", api_key, requests, resume
    resume.set()
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def thinker_browser(tmp_path_factory, thinker_service):
    driver = open_browser(tmp_path_factory, *thinker_service[:2])
    yield driver
    driver.quit()


def folds(answer):
    """The reasoning of an answer view, (summary, open, text), and its tool calls, [(summary, open,
    arguments)]; the text of a closed fold is read from the DOM."""
    reasoning = answer.find_element(By.CSS_SELECTOR, "details.reasoning")
    calls = answer.find_elements(By.CSS_SELECTOR, ".tool-calls details.tool-call")
    return ((reasoning.find_element(By.TAG_NAME, "summary").text, reasoning.get_attribute("open") is not None,
             reasoning.find_element(By.CLASS_NAME, "reasoning-text").get_attribute("textContent")),
            [(c.find_element(By.TAG_NAME, "summary").text, c.get_attribute("open") is not None,
              c.find_element(By.CSS_SELECTOR, "pre code").get_attribute("textContent")) for c in calls])


def test_reasoning_and_tool_calls_are_folded(thinker_browser, thinker_service, tmp_path):
    browser = thinker_browser
    base_url, _, requests, resume = thinker_service
    browser.get(f"{base_url}/")
    pick_model(browser, THINKER)
    type_message(browser, "What is the weather in Paris?")

    # The reasoning streams first, folded, under "Thinking…".
    reasoning_text = "".join(REASONING)
    wait(browser, lambda d: last_answer(d) is not None and folds(last_answer(d))[0][2] == reasoning_text,
         message="the reasoning did not stream in")
    assert last_answer(browser).get_attribute("data-state") == "streaming"
    assert folds(last_answer(browser)) == (("Thinking…", False, reasoning_text), [])
    resume.set()
    wait(browser, lambda d: last_answer(d).get_attribute("data-state") == "done", message="the answer did not finish")

    weather = ("Tool call: get_weather", False, json.dumps(WEATHER_ARGUMENTS, indent=2))
    time_call = ("Tool call: get_time", False, TIME_ARGUMENTS)
    expected = (("Reasoning", False, reasoning_text), [weather, time_call])
    assert folds(last_answer(browser)) == expected
    assert answer_text(browser) == "".join(CONTENT)
    # The reasoning comes above the answer, the tool calls below it.
    order = browser.execute_script("return [...arguments[0].children].map((e) => e.className || e.tagName)",
                                   last_answer(browser))
    assert order == ["H2", "reasoning", "content", "tool-calls", "note"]
    # Model text is only text, in the folds too.
    messages = browser.find_element(By.ID, "messages")
    for tag in ("img", "script", "b"):
        assert messages.find_elements(By.TAG_NAME, tag) == [], tag
    assert browser.execute_script("return window.injected") is None

    # Opened, a fold shows its text.
    for summary in last_answer(browser).find_elements(By.TAG_NAME, "summary"):
        summary.click()
    reasoning = last_answer(browser).find_element(By.CLASS_NAME, "reasoning-text")
    assert reasoning.is_displayed() and reasoning.text == reasoning_text.strip()
    assert '"city": "<script>window.injected = 1</script>Paris"' in \
        last_answer(browser).find_element(By.CSS_SELECTOR, ".tool-call pre").text
    save_screenshot(browser, tmp_path, "chat_page_reasoning")

    # After a reload both are there again, folded.
    browser.refresh()
    wait(browser, lambda d: len(answers(d)) == 1, message="the conversation was not restored")
    assert folds(last_answer(browser)) == expected
    stored = json.loads(browser.execute_script("return localStorage.getItem('chatai.conversations')"))
    reply = stored["conversations"][0]["messages"][1]
    assert reply["reasoning"] == reasoning_text
    assert reply["toolCalls"] == [
        {"id": "call_weather", "name": "get_weather", "arguments": json.dumps(WEATHER_ARGUMENTS)},
        {"id": "call_time", "name": "get_time", "arguments": TIME_ARGUMENTS}]

    # The model gets back the answer's content only.
    type_message(browser, "And tomorrow?")
    wait(browser, lambda d: len(answers(d)) == 2 and answers(d)[1].get_attribute("data-state") == "done",
         message="the second answer did not finish")
    assert [r["messages"] for r in requests] == [
        [{"role": "user", "content": "What is the weather in Paris?"}],
        [{"role": "user", "content": "What is the weather in Paris?"},
         {"role": "assistant", "content": "".join(CONTENT)},
         {"role": "user", "content": "And tomorrow?"}],
    ]

    # On a narrow screen the opened folds stay within the chat.
    browser.set_window_size(390, 800)
    try:
        browser.refresh()
        wait(browser, lambda d: len(answers(d)) == 2, message="the conversation was not restored")
        for summary in last_answer(browser).find_elements(By.TAG_NAME, "summary"):
            summary.click()
        assert browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth",
                                      browser.find_element(By.ID, "messages"))
        save_screenshot(browser, tmp_path, "chat_page_reasoning_narrow")
    finally:
        browser.set_window_size(1200, 900)


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
        ('{"conversations": [{"messages": [{"role": "assistant", "content": "", "toolCalls": {}}]}]}',
         "conversations[0].messages[0].toolCalls must be a list"),
        ('{"conversations": [{"messages": [{"role": "assistant", "content": "", "toolCalls": [{"name": 1}]}]}]}',
         "conversations[0].messages[0].toolCalls[0].name must be a string"),
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
