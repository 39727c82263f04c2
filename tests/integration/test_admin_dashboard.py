"""The admin dashboard in a real headless Chromium: sign in, replay a dead letter, see it succeed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from background_worker.worker import drain_subscription
from tests.integration.dlq_helpers import dlq_task_ids, seed_dead_letters
from tests.integration.helpers import publish_tasks, status_of, upload
from tests.integration.served_app import served_api

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ADMIN_KEY = "dashboard-admin-key"
WAIT_SECONDS = 30


def _browser_installed() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed by scripts/install-browser.sh if missing."""
    if not _browser_installed() and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "install-browser.sh")],
            capture_output=True,
            timeout=900,
            check=False,
        )
    if not _browser_installed():
        pytest.skip(
            f"{CHROMIUM} and {CHROMEDRIVER} are needed and could not be installed: "
            "run scripts/install-browser.sh as root (apt-get install chromium chromium-driver)"
        )
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def browser(chromium, tmp_path, artifacts_dir):
    """A headless Chromium with a fresh profile, quit (with its driver) whatever happens."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    # Naming the driver keeps Selenium Manager from looking for (or downloading) one.
    service = Service(driver_path, log_output=str(artifacts_dir / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def api_url(pipeline):
    """The API with an admin key, served on a free loopback port for the test's duration."""
    with served_api(pipeline.replace(admin_api_keys=frozenset({ADMIN_KEY}))) as url:
        yield url


def sign_in(browser, api_url: str):
    """Sign in through the form; a waiter for the signed-in page."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{api_url}/admin")
    browser.find_element(By.ID, "admin-key").send_keys(ADMIN_KEY)
    browser.find_element(By.ID, "login").click()
    # Auto-refresh replaces rows under the test's feet: a stale element is looked up again.
    return WebDriverWait(browser, WAIT_SECONDS, ignored_exceptions=[StaleElementReferenceException])


def ready(wait, table: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"#{table}[data-state=ready]")))


def test_dashboard_replays_a_dead_letter_that_then_succeeds(
    pipeline, api_url, browser, artifacts_dir
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    (task_id,) = publish_tasks(pipeline, [("file_processing", {"filename": "late.txt"})])
    drain_subscription(pipeline)  # its input is missing: dead-lettered at once
    (bystander,) = seed_dead_letters(pipeline, 1, error_message="left alone")
    upload(pipeline, "late.txt", b"arrived late\n")  # the operator fixes the cause
    row = f"#dlq-table tr[data-task-id='{task_id}']"

    wait = sign_in(browser, api_url)
    ready(wait, "dlq-table")
    ready(wait, "tasks-table")
    listed = browser.find_element(By.CSS_SELECTOR, row).text
    browser.save_screenshot(str(artifacts_dir / "admin-dashboard-dlq.png"))
    browser.find_element(By.CSS_SELECTOR, f"{row} input.dlq-select").click()
    browser.find_element(By.ID, "replay-selected").click()
    alert = wait.until(ec.alert_is_present())
    question = alert.text
    alert.accept()
    wait.until(ec.text_to_be_present_in_element((By.ID, "result"), "Replayed 1 of 1"))
    wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, row)))
    ready(wait, "dlq-table")
    counted = browser.find_element(By.ID, "dlq-count").text
    if pipeline.monitoring_emulator_host:  # Pub/Sub's own count, where the emulator has one
        wait.until(ec.text_to_be_present_in_element((By.ID, "backlog-dlq"), "1"))
    else:
        assert browser.find_element(By.ID, "backlog-dlq").text == "n/a"
    browser.save_screenshot(str(artifacts_dir / "admin-dashboard-replayed.png"))

    summary = drain_subscription(pipeline)

    assert "missing_input" in listed and "late.txt" in listed
    assert question == "Replay 1 dead letter(s) to the task topic?"
    assert counted.startswith("1 of 1 match")
    assert summary.outcomes["succeeded"] == 1
    status = status_of(pipeline, task_id)
    assert status.state == "succeeded" and status.replay_count == 1
    assert dlq_task_ids(pipeline) == Counter([bystander])
    # No reload: auto-refresh brings the task's new state and the hour's chart.
    task_row = f"#tasks-table tr[data-task-id='{task_id}']"
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, task_row), "succeeded"))
    chart = "#throughput-chart rect[data-series={}]"
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, chart.format("succeeded"))))
    assert browser.find_elements(By.CSS_SELECTOR, chart.format("dead_lettered"))
    assert not browser.find_elements(By.CSS_SELECTOR, chart.format("retried"))
    browser.save_screenshot(str(artifacts_dir / "admin-dashboard.png"))


def test_replay_with_a_payload_fix_and_a_rate_runs_as_a_new_task(pipeline, api_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    (task_id,) = publish_tasks(pipeline, [("file_processing", {"filename": "wrong.txt"})])
    drain_subscription(pipeline)
    upload(pipeline, "right.txt", b"the right one\n")

    wait = sign_in(browser, api_url)
    ready(wait, "dlq-table")
    browser.find_element(By.ID, "filter-error").send_keys("missing_input")
    browser.find_element(By.ID, "replay-set").send_keys("filename=right.txt")
    browser.find_element(By.ID, "replay-rate").send_keys("5/s")
    browser.find_element(By.ID, "replay-matching").click()
    alert = wait.until(ec.alert_is_present())
    question = alert.text
    alert.accept()
    wait.until(ec.text_to_be_present_in_element((By.ID, "result"), "Replayed 1 of 1"))
    drain_subscription(pipeline)

    original = status_of(pipeline, task_id)
    assert 'matching {"error":"missing_input"}' in question
    assert 'with {"filename":"right.txt"}' in question
    assert original.replayed_as, "a changed payload runs as a new task"
    assert status_of(pipeline, original.replayed_as).state == "succeeded"


def test_a_task_page_shows_payload_history_and_outputs_to_preview(
    pipeline, api_url, browser, artifacts_dir
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    upload(pipeline, "page.txt", b"shown on the page\n")
    (task_id,) = publish_tasks(pipeline, [("file_processing", {"filename": "page.txt"})])
    drain_subscription(pipeline)

    wait = sign_in(browser, api_url)
    ready(wait, "tasks-table")
    browser.find_element(By.CSS_SELECTOR, f"#tasks-table tr[data-task-id='{task_id}'] a").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#task[data-state=ready]")))
    payload = browser.find_element(By.ID, "payload").text
    history = browser.find_element(By.ID, "history-table").text
    outputs = browser.find_element(By.ID, "outputs-table").text
    browser.find_element(
        By.CSS_SELECTOR, "#outputs-table tr[data-output='processed.txt'] button:last-child"
    ).click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "output-preview"), "shown on the page"))
    browser.save_screenshot(str(artifacts_dir / "admin-task-page.png"))

    assert browser.current_url.endswith(f"/admin/task/{task_id}")
    assert '"filename": "page.txt"' in payload
    assert "succeeded" in history
    assert "processed.txt" in outputs and "metadata.json" in outputs
    assert browser.find_element(By.ID, "replay-section").get_attribute("hidden") is not None
