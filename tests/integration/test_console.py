"""The web console in a real browser (Debian's headless chromium through selenium) against the bed: the operator
as a subprocess serving the console, users as ServiceAccounts with the namespace's `edit` or `view` rights and
TokenRequest tokens. An edit user sees a run progress to Succeeded, switches the platform OFF (workloads at 0)
and ON (exact replicas back), cancels a run; a view user finds the buttons disabled and a direct POST refused by
the API server (403); a wrong token and a write without the CSRF token are refused. Screenshots of the power view
and of a run's page go to docs/ (checked in when they change)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from kubernetes import client

from tests.helpers import wait_for
from tests.integration.operator_fixtures import (  # noqa: F401  (fixtures)
    Operator,
    Runs,
    operator,
    runs,
    trainingrun_crd,
)
from tests.integration.power_support import Platform

pytestmark = pytest.mark.integration

RATIOS = {"split_ratio_train": 0.8, "split_ratio_evaluate": 0.1, "split_ratio_test": 0.1}
PART_OF = {"app.kubernetes.io/part-of": "kto-mlflow"}
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def _token(bed: Any, namespace: str, role: str) -> str:
    """A ServiceAccount bound to the ClusterRole `role` in the namespace, and a TokenRequest token of it."""
    core, rbac = client.CoreV1Api(bed.api()), client.RbacAuthorizationV1Api(bed.api())
    name = f"{role}-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
    review = core.create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 3600}})
    return str(review.status.token)


@pytest.fixture
def console(bed: Any, namespace: str, operator: Operator) -> str:  # noqa: F811
    bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bed.repo / "crds"))
    bed.kubectl("wait", "--for=condition=Established", "crd/powerschedules.kto.dev", "--timeout=60s")
    operator.start(KTO_POWER_POLL="0.25")
    url = f"http://127.0.0.1:{operator.console_port}"
    wait_for(lambda: requests.get(url, timeout=2).ok, 30, "console answers")
    return url


@pytest.fixture
def platform(bed: Any, namespace: str, console: str) -> Iterator[Platform]:
    """The namespace's platform; its PowerSchedules deleted while the operator still runs (their finalizer is
    the operator's to release), so that the namespace can go."""
    platform = Platform(bed, namespace)
    yield platform
    try:
        platform.delete_powers()
    finally:
        platform.strip_finalizers()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (bed/system-deps.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(driver: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    wait_for(lambda: driver.find_element(By.ID, "token").is_displayed(), 15, "sign-in form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-button").click()


def _text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def _row(driver: Any, table: str, name: str) -> Any:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr[data-name='{name}']")
    return rows[0] if rows else None


# What the page itself weighs and when it first paints, from Chromium's performance timing (the API calls
# the page makes afterwards are not part of its weight).
PAGE_FIGURES = """
const nav = performance.getEntriesByType('navigation')[0];
const size = (e) => e.transferSize || e.encodedBodySize || 0;
const files = performance.getEntriesByType('resource').filter((r) => !new URL(r.name).pathname.startsWith('/api/'));
const paint = Object.fromEntries(performance.getEntriesByType('paint').map((p) => [p.name, p.startTime]));
return {bytes: size(nav) + files.reduce((sum, r) => sum + size(r), 0), files: 1 + files.length,
        first_paint_ms: paint['first-paint'], first_contentful_paint_ms: paint['first-contentful-paint'],
        dom_content_loaded_ms: nav.domContentLoadedEventEnd};
"""
PAGE_MAX_BYTES = 100_000  # no framework, no CDN: the page, its script, its style sheet and icon


def _fresh(read: Callable[[], Any]) -> Any:
    """`read()` of elements the page may re-render meanwhile (it polls every 2 s): None when one went stale,
    so that the caller's wait_for simply looks again."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        return read()
    except StaleElementReferenceException:
        return None


def _phase(driver: Any, name: str) -> str | None:
    def read() -> str | None:
        row = _row(driver, "runs-table", name)
        return row.get_attribute("data-phase") if row is not None else None

    return _fresh(read)  # type: ignore[no-any-return]


def test_edit_user_switches_the_platform_follows_and_cancels_runs(
        bed: Any, namespace: str, console: str, platform: Platform, runs: Runs, browser: Any) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    platform.statefulset("mysql", 1, PART_OF)
    platform.deployment("minio", 1, PART_OF)
    platform.deployment("mlflow", 2, PART_OF)
    platform.create_power({"state": "on", "selector": {"matchLabels": PART_OF}})
    platform.wait_state("On")
    for kind, name, n in (("StatefulSet", "mysql", 1), ("Deployment", "minio", 1), ("Deployment", "mlflow", 2)):
        platform.wait_ready(kind, name, n)
    runs.submit("watched", parameters={**RATIOS, "epochs": 3, "sleep": 1.0})

    _sign_in(browser, console, _token(bed, namespace, "edit"))
    wait_for(lambda: _phase(browser, "watched") == "Succeeded", 180, "run Succeeded on the page")
    page = browser.execute_script(PAGE_FIGURES)
    print(f"console page: {page}")
    assert 0 < page["bytes"] <= PAGE_MAX_BYTES and page["first_contentful_paint_ms"] is not None, page
    browser.find_element(By.LINK_TEXT, "watched").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#chart svg polyline"), 30, "metric chart")
    assert "epoch 3 of 3" in _text(browser, "run-epochs")
    browser.save_screenshot(str(bed.repo / "docs/console-run.png"))
    browser.find_element(By.ID, "back").click()

    # OFF: every managed workload at 0, the saved replicas shown.
    wait_for(lambda: _text(browser, "power-button") == "ON", 15, "power button shows ON")
    browser.find_element(By.ID, "power-button").click()
    platform.wait_state("Off", 90)
    assert [platform.replicas(k, n) for k, n in (("StatefulSet", "mysql"), ("Deployment", "minio"),
                                                 ("Deployment", "mlflow"))] == [0, 0, 0]
    wait_for(lambda: _text(browser, "power-button") == "OFF", 15, "power button shows OFF")
    wait_for(lambda: _fresh(lambda: _row(browser, "workloads", "mlflow").find_element(By.CLASS_NAME, "saved").text)
             == "2", 15, "saved replicas of mlflow on the page")
    browser.save_screenshot(str(bed.repo / "docs/console-power.png"))

    # ON: exact replicas back, in the wake order.
    browser.find_element(By.ID, "power-button").click()
    platform.wait_state("On", 120)
    assert (platform.replicas("StatefulSet", "mysql"), platform.replicas("Deployment", "minio"),
            platform.replicas("Deployment", "mlflow")) == (1, 1, 2)
    wait_for(lambda: _text(browser, "power-button") == "ON", 15, "power button shows ON again")

    # Cancel a long run from its row.
    runs.submit("long", parameters={**RATIOS, "epochs": 300, "sleep": 0.5})
    runs.wait_phase("long", "Running", 120)
    wait_for(lambda: _phase(browser, "long") == "Running", 15, "long run Running on the page")
    wait_for(lambda: _fresh(lambda: _row(browser, "runs-table", "long").find_element(
        By.CSS_SELECTOR, "button.cancel").click() or True), 15, "cancel clicked")
    runs.wait_phase("long", "Cancelled", 90)
    wait_for(lambda: _phase(browser, "long") == "Cancelled", 15, "Cancelled on the page")


def test_view_user_wrong_token_and_csrf(
        bed: Any, namespace: str, console: str, platform: Platform, runs: Runs, browser: Any) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    platform.deployment("mlflow", 1, PART_OF)
    platform.create_power({"state": "on", "selector": {"matchLabels": PART_OF}})
    platform.wait_state("On")
    runs.submit("seen", parameters={**RATIOS, "epochs": 300, "sleep": 0.5})

    # A wrong token: refused, no session.
    _sign_in(browser, console, "not-a-token")
    wait_for(lambda: "refused" in _text(browser, "signin-error"), 15, "wrong token refused")

    # A view user: sees, cannot switch or cancel, and the page says why.
    view = _token(bed, namespace, "view")
    _sign_in(browser, console, view)
    wait_for(lambda: _phase(browser, "seen") is not None, 30, "the run listed for the view user")
    wait_for(lambda: "may not patch powerschedules" in _text(browser, "power-denied"), 15, "why switch is off")
    assert not browser.find_element(By.ID, "power-button").is_enabled()
    enabled = wait_for(lambda: _fresh(lambda: [_row(browser, "runs-table", "seen").find_element(
        By.CSS_SELECTOR, "button.cancel").is_enabled()]), 15, "the cancel button read")
    assert enabled == [False]

    # Direct POSTs with the view user's session: the API server's 403 (RBAC), and no CSRF token: refused first.
    http = requests.Session()
    signed = http.post(f"{console}/api/session", json={"token": view}, timeout=10)
    assert signed.status_code == 200
    csrf = signed.json()["csrf"]
    path = f"{console}/api/namespaces/{namespace}/runs/seen/cancel"
    refused = http.post(path, headers={"X-CSRF-Token": csrf}, json={}, timeout=10)
    assert refused.status_code == 403 and "forbidden" in refused.json()["error"], refused.text
    no_csrf = http.post(path, json={}, timeout=10)
    assert no_csrf.status_code == 403 and "X-CSRF-Token" in no_csrf.json()["error"]
    assert not (runs.get("seen") or {})["spec"].get("cancel")

    # An edit user's write without the CSRF token is refused too.
    edit = requests.Session()
    assert edit.post(f"{console}/api/session", json={"token": _token(bed, namespace, "edit")}, timeout=10).ok
    assert edit.post(path, json={}, timeout=10).status_code == 403
    assert edit.post(f"{console}/api/namespaces/{namespace}/power", json={"state": "off"},
                     timeout=10).status_code == 403
    assert not (runs.get("seen") or {})["spec"].get("cancel")
