"""``/status`` and ``/status.json`` (B9) in a real server and a real headless Chromium, and ``stella-mirror
status`` (issue 10 item 4) on the same roots: one model, shown only as far as the caller may read."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from test_serve_reload import htpasswd

from clitools import cli
from serverproc import ServerProc, start_server
from stella_mirror.bundle.keyfiles import generate_keypair
from stella_mirror.sync.status import SyncStatus, write_status
from stella_mirror.timeutil import utcnow
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, Path, Path]]:
    tmp = tmp_path_factory.mktemp("status")
    key = generate_keypair(tmp / "keys")
    croot, xroot = tmp / "concelier", tmp / "excititor"
    publish_concelier(croot, key, {"primary": [advisory("CVE-2024-1")], "community": [advisory("X-1")]}, "e1")
    publish_excititor(xroot, key, {"community": {"consensus": [{"v": 1}, {"v": 2}]},
                                   "primary": {"consensus": [{"v": 3}]}}, "x1")
    now = utcnow()
    # The Concelier root was last confirmed current 40 minutes ago: stale (runbook §7: 15 minutes).
    write_status(croot, SyncStatus("s3://mirror-stellaops/concelier", now - timedelta(minutes=1), "unreachable",
                                   now - timedelta(minutes=40), "e1", 1, "connection refused"))
    sp = start_server(tmp / "srv", env=_env(tmp, croot, xroot), ready_path="/readyz")
    try:
        yield sp, croot, xroot
    finally:
        sp.stop()


def _env(tmp: Path, croot: Path, xroot: Path) -> dict[str, str]:
    pw = tmp / "primary.htpasswd"
    if not pw.exists():
        htpasswd(pw, {"alice": "alice-pw"})
    return {
        "CONCELIER__MIRROR__EXPORTROOT": str(croot),
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__0__REQUIREAUTHENTICATION": "true",
        "CONCELIER__MIRROR__DOMAINS__0__HTPASSWD": str(pw),
        "CONCELIER__MIRROR__DOMAINS__1__ID": "community",
        "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT": str(xroot),
        "EXCITITOR__MIRROR__DOMAINS__0__ID": "community",
        # Shown only to callers who may read it.
        "EXCITITOR__MIRROR__DOMAINS__1__ID": "primary",
        "EXCITITOR__MIRROR__DOMAINS__1__REQUIREAUTHENTICATION": "true",
        "EXCITITOR__MIRROR__DOMAINS__1__HTPASSWD": str(pw),
    }


def _domains(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    return {f"{d['product']}/{d['domainId']}": d for r in doc["roots"] for d in r["domains"]}  # type: ignore[attr-defined]


def test_status_json_shows_only_what_the_caller_may_read(site: tuple[ServerProc, Path, Path]) -> None:
    sp, _, _ = site
    httpx.get(sp.url("/concelier/exports/mirror/community/manifest.json"))
    anonymous = httpx.get(sp.url("/status.json"))
    assert anonymous.status_code == 200 and anonymous.headers["cache-control"] == "no-store"
    assert "primary" not in anonymous.text
    doms = _domains(anonymous.json())
    assert set(doms) == {"concelier/community", "excititor/community"}
    c = doms["concelier/community"]
    assert c["stale"] is True and c["exportId"] == "e1" and c["sequence"] == 1 and c["items"] == 1
    assert c["keyIds"] and c["sizeBytes"] > 0 and c["requests"] >= 1 and c["quotaRejections"] == 0
    assert doms["excititor/community"]["stale"] is False  # never synced here (filled by export): not an error
    roots = {r["product"]: r for r in anonymous.json()["roots"]}
    assert roots["concelier"]["lastSync"]["lastOutcome"] == "unreachable" and roots["concelier"]["lagSeconds"] >= 2400
    assert roots["excititor"]["lastSync"] is None
    alice = httpx.get(sp.url("/status.json"), auth=("alice", "alice-pw")).json()
    assert "concelier/primary" in _domains(alice)
    assert "primary" not in httpx.get(sp.url("/status"), auth=("alice", "wrong")).text


def test_status_page_in_headless_chromium_marks_the_stale_domain(site: tuple[ServerProc, Path, Path],
                                                                tmp_path: Path) -> None:
    sp, _, _ = site
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromium-driver are installed by .ci/run"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}")
    options.add_argument("--window-size=1400,900")
    options.add_argument("--blink-settings=scriptEnabled=false")  # the page needs no JavaScript
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get(sp.url("/status"))
        assert driver.title == "Mirror status"
        stale = driver.find_element(By.ID, "concelier-community")
        fresh = driver.find_element(By.ID, "excititor-community")
        assert stale.find_element(By.CLASS_NAME, "badge").text == "STALE" and stale.is_displayed()
        assert fresh.find_element(By.CLASS_NAME, "badge").text == "ok"
        cell = stale.find_element(By.TAG_NAME, "td")
        assert cell.value_of_css_property("background-color") == "rgba(198, 40, 40, 1)"  # visibly red
        assert fresh.find_element(By.TAG_NAME, "td").value_of_css_property("background-color") != \
            "rgba(198, 40, 40, 1)"
        assert "primary" not in driver.page_source.lower()
        shot = tmp_path / "status.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    finally:
        driver.quit()


def test_status_command_on_the_same_roots(site: tuple[ServerProc, Path, Path]) -> None:
    _, croot, xroot = site
    res = cli("status", "--dest", croot, "--dest", xroot)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("STALE concelier") and "lag 40 min" in lines[0]
    assert any(line.startswith("ok    excititor") and "never synced" in line for line in lines)
    relaxed = cli("status", "--dest", croot, "--dest", xroot, "--max-lag", "1h", "--json")
    assert relaxed.returncode == 0, relaxed.stdout
    doc = orjson.loads(relaxed.stdout)
    assert doc["stale"] is False and {r["product"] for r in doc["roots"]} == {"concelier", "excititor"}


def test_status_command_reads_the_configured_roots(site: tuple[ServerProc, Path, Path], tmp_path: Path) -> None:
    _, croot, xroot = site
    cfg = tmp_path / "mirror.yaml"
    cfg.write_text(f"concelier: {{mirror: {{exportRoot: {croot}, domains: [{{id: community}}]}}}}\n"
                   f"excititor: {{artifacts: {{filesystem: {{root: {xroot}}}}}}}\n")
    res = cli("status", "--config", cfg, "--json")
    assert res.returncode == 1
    doc = orjson.loads(res.stdout)
    concelier = next(r for r in doc["roots"] if r["product"] == "concelier")
    assert [d["domainId"] for d in concelier["domains"]] == ["community"]


def test_one_server_per_product_still_shows_both_products(site: tuple[ServerProc, Path, Path],
                                                          tmp_path: Path) -> None:
    """As the compose and Helm profiles run it (and the gateway sends /status to the Concelier server): the page
    there shows the Excititor roots too, as the Excititor server reports them for the same caller."""
    _, croot, xroot = site
    env = _env(tmp_path, croot, xroot)
    excititor = start_server(tmp_path / "x", env=env, args=["--service", "excititor"], ready_path="/readyz")
    try:
        concelier = start_server(tmp_path / "c", args=["--service", "concelier"], ready_path="/readyz", env={
            **env, "MIRROR__GATEWAY__UPSTREAMS__EXCITITOR": f"127.0.0.1:{excititor.port}"})
        try:
            anonymous = httpx.get(concelier.url("/status.json")).json()
            assert set(_domains(anonymous)) == {"concelier/community", "excititor/community"}
            assert "primary" not in httpx.get(concelier.url("/status")).text
            alice = httpx.get(concelier.url("/status.json"), auth=("alice", "alice-pw")).json()
            # alice's credential reaches the Excititor server too: its primary domain is shown to her there.
            assert set(_domains(alice)) == {"concelier/primary", "excititor/primary"}
            page = httpx.get(concelier.url("/status")).text
            assert "id='excititor-community'" in page and "id='concelier-community'" in page
            excititor.stop()
            down = {r["product"]: r for r in httpx.get(concelier.url("/status.json")).json()["roots"]}
            assert down["excititor"]["stale"] is True
            assert down["excititor"]["problems"] == [
                f"excititor status unavailable from its server at 127.0.0.1:{excititor.port}: ConnectError"]
            assert down["concelier"]["domains"]
        finally:
            concelier.stop()
    finally:
        excititor.stop()


def _chromium(tmp_path: Path, width: int = 1400) -> webdriver.Chrome:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromium-driver are installed by .ci/run"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}")
    options.add_argument(f"--window-size={width},900")
    options.add_argument("--blink-settings=scriptEnabled=false")
    return webdriver.Chrome(options=options, service=Service(driver_path))


def test_status_on_an_authenticated_host_asks_for_credentials(site: tuple[ServerProc, Path, Path],
                                                              tmp_path: Path) -> None:
    _, croot, _ = site
    pw = tmp_path / "primary.htpasswd"
    htpasswd(pw, {"alice": "alice-pw"})
    env = {
        "CONCELIER__MIRROR__EXPORTROOT": str(croot),
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__0__REQUIREAUTHENTICATION": "true",
        "CONCELIER__MIRROR__DOMAINS__0__HTPASSWD": str(pw),
        "EXCITITOR__MIRROR__ENABLED": "false",
    }
    sp = start_server(tmp_path / "srv", env=env, ready_path="/readyz")
    try:
        anonymous = httpx.get(sp.url("/status"))
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith('Basic realm="primary"')
        assert anonymous.headers["content-type"] == "application/problem+json" and "primary" not in anonymous.text
        assert httpx.get(sp.url("/status"), auth=("alice", "wrong")).status_code == 401
        driver = _chromium(tmp_path, 1280)
        try:
            driver.get(sp.url("/status"))  # no credentials: the browser is refused (and would show its login)
            assert driver.title != "Mirror status" and "primary" not in driver.page_source.lower()
            # Credentials in the URL are only sent when the server asks for them (a 401 with a Basic challenge).
            driver.get(sp.url("/status").replace("http://", "http://alice:alice-pw@"))
            assert driver.title == "Mirror status"
            row = driver.find_element(By.ID, "concelier-primary")
            assert row.is_displayed() and "Primary" in row.text
            size = row.find_elements(By.TAG_NAME, "td")[6].text
            assert size.endswith(("B", "KiB", "MiB")) and "," not in size  # human units
            assert driver.find_element(By.CLASS_NAME, "generated").text.startswith("Generated at 20")
            table = driver.find_element(By.TAG_NAME, "table")
            assert table.rect["x"] + table.rect["width"] <= 1280  # fits, problems column included
        finally:
            driver.quit()
    finally:
        sp.stop()


def test_status_page_fits_1280_pixels_with_long_problems(site: tuple[ServerProc, Path, Path],
                                                         tmp_path: Path) -> None:
    sp, _, _ = site
    driver = _chromium(tmp_path, 1280)
    try:
        driver.get(sp.url("/status"))
        for table in driver.find_elements(By.TAG_NAME, "table"):
            assert table.rect["x"] + table.rect["width"] <= 1280, table.rect
    finally:
        driver.quit()
