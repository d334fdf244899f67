"""The board's HTML page in a real browser (headless Chromium through Selenium): the headline renders,
clicking a header re-orders the rows, a filter hides rows, and the console stays clean. Skips, saying why,
where Chromium, its driver or Selenium is missing (`.ci/run` installs them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from leaderboard.site import _inline, render_site

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


def test_the_page_is_deterministic_and_links_every_cell(tmp_path: Path) -> None:
    results = tmp_path / "results" / "smoke"
    results.mkdir(parents=True)
    for path in sorted((ROOT / "leaderboard" / "results" / "smoke").glob("*.json"))[:40]:
        shutil.copy(path, results / path.name)
    page = render_site(tmp_path / "results", ROOT / "leaderboard" / "plots")
    assert page == render_site(tmp_path / "results", ROOT / "leaderboard" / "plots")
    assert page.count('href="results/smoke/') == 40
    assert "<h2>Headlines</h2>" in page and "plots/smoke-smoke-downstream.png" in page


@pytest.fixture
def browser():  # noqa: ANN201
    if not (CHROMIUM and DRIVER):
        pytest.skip("headless Chromium test skipped: no chromium/chromedriver on this machine (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium.webdriver", reason="headless Chromium test skipped: selenium is not installed")
    from leaderboard.site import chrome_driver

    driver = chrome_driver()
    yield driver
    driver.quit()


def test_the_page_sorts_filters_and_logs_no_errors(browser, tmp_path: Path) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    results = tmp_path / "results" / "smoke"
    results.mkdir(parents=True)
    for path in sorted((ROOT / "leaderboard" / "results" / "smoke").glob("downstream__simclr*finetune*__b0.1__s0*.json")):
        shutil.copy(path, results / path.name)
    shutil.copytree(ROOT / "leaderboard" / "plots", tmp_path / "plots")
    page = tmp_path / "index.html"
    page.write_text(render_site(tmp_path / "results", tmp_path / "plots"))
    browser.get(page.as_uri())

    assert browser.find_element(By.CSS_SELECTOR, "#headlines h2").text == "Headlines"
    assert browser.find_elements(By.CSS_SELECTOR, "#headlines table tbody tr")
    rows = lambda: browser.find_elements(By.CSS_SELECTOR, "#cells-table tbody tr")  # noqa: E731
    visible = lambda: [r for r in rows() if r.is_displayed()]  # noqa: E731
    column = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#cells-table thead th")].index("accuracy_drop")

    def drops() -> list[str]:
        return [r.find_elements(By.TAG_NAME, "td")[column].text for r in visible()]

    before = drops()
    browser.find_elements(By.CSS_SELECTOR, "#cells-table thead th")[column].click()
    after = drops()
    assert after != before and sorted(after, key=lambda t: float(t or "-inf"), reverse=True) == after

    total = len(visible())
    Select(browser.find_element(By.CSS_SELECTOR, "select[name=defense]")).select_by_value("dp_sgd")
    shown = visible()
    assert 0 < len(shown) < total
    assert all(r.get_attribute("data-defense") == "dp_sgd" for r in shown)
    assert browser.find_element(By.ID, "cell-count").text == str(len(shown))

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    browser.save_screenshot(str(tmp_path / "screenshot.png"))
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000


def test_the_headline_states_the_published_effect_of_the_attacks_it_shows() -> None:
    """Under a headline table, the paper's effect of its attacks (against the paper's own no-attack
    number, per method) with protocol and source; nothing for a track or attack without one."""
    from leaderboard.render import published_headline

    line = published_headline("pretrain-availability", {"none", "cp_c", "random_noise"})
    assert "`cp_c` drop 23.8 / 29.9 / 35.3 (simclr / mocov2 / byol)" in line and "cp_s" not in line
    assert "CIFAR-10, ResNet-18" in line and "not this tier's data" in line and "(#published-numbers)" in line
    assert "ASR gain 35.1 (mocov2)" in published_headline("pretrain-targeted", {"poisoned_encoder"})
    assert published_headline("downstream", {"gc", "label_flip"}) == ""
    assert published_headline("pretrain-availability", {"ue"}) == ""
    assert 'href="README.md#published-numbers"' in _inline("[All](#published-numbers)")
