"""The board as one static HTML page, ``leaderboard/index.html``, from the same result files and the same
numbers as ``leaderboard/README.md`` (``python -m benchmark leaderboard`` writes both; ``--check`` compares
both). No torch, no network, no external script: the page's small script sorts a table when a header is
clicked and filters rows by tier, track, scenario and defense.

Sections: the headlines (strongest attacks; each defense's accuracy restored beside its cost), the figures
under ``plots/``, and every cell with its main metrics and a link to its JSON record.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pandas as pd

from leaderboard.render import HEADLINE_INTRO, TIER_NOTES, TIER_ORDER, TRACK_ORDER, _rows, headline_blocks, load_records

CELL_METRICS = ("accuracy_drop", "accuracy_drop_poisoned_probe", "asr_gain", "defense_cost", "privacy_epsilon")
FILTERS = ("tier", "track", "scenario", "defense")

SCRIPT = """
function cellValue(row, i) {
  const text = row.cells[i].textContent.trim();
  const number = parseFloat(text);
  return isNaN(number) ? text.toLowerCase() : number;
}
function sortTable(table, column) {
  const body = table.tBodies[0];
  const ascending = table.dataset.sortColumn === String(column) ? table.dataset.sortOrder !== "asc" : false;
  const rows = Array.from(body.rows);
  rows.sort(function (a, b) {
    const x = cellValue(a, column), y = cellValue(b, column);
    if (x === y) { return 0; }
    const before = (typeof x === typeof y) ? x < y : typeof x === "number";
    return (before ? -1 : 1) * (ascending ? 1 : -1);
  });
  rows.forEach(function (row) { body.appendChild(row); });
  table.dataset.sortColumn = String(column);
  table.dataset.sortOrder = ascending ? "asc" : "desc";
}
function applyFilters() {
  const wanted = {};
  document.querySelectorAll("select.filter").forEach(function (s) { wanted[s.name] = s.value; });
  document.querySelectorAll("tr[data-tier]").forEach(function (row) {
    let show = true;
    for (const key in wanted) {
      if (wanted[key] !== "" && row.dataset[key] !== undefined && row.dataset[key] !== wanted[key]) { show = false; }
    }
    row.hidden = !show;
  });
  document.querySelectorAll("section[data-tier]").forEach(function (section) {
    section.hidden = wanted.tier !== "" && section.dataset.tier !== wanted.tier;
  });
  const shown = document.querySelectorAll("#cells tbody tr:not([hidden])").length;
  document.getElementById("cell-count").textContent = String(shown);
}
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.sortable th").forEach(function (th, i) {
    th.addEventListener("click", function () { sortTable(th.closest("table"), th.cellIndex); });
  });
  document.querySelectorAll("select.filter").forEach(function (s) { s.addEventListener("change", applyFilters); });
  applyFilters();
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
table.sortable th { cursor: pointer; background: #f3f3f3; }
.filters label { margin-right: 1em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.note { color: #555; }
"""


def _inline(text: str) -> str:
    """Our markdown's inline marks (``code``, **bold**, *italic*, links) as HTML; a link to a section of
    README.md (``#published-numbers``) points into README.md, which the page does not repeat."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\[([^\]]+)\]\(#([^)\s]+)\)", r'<a href="README.md#\2">\1</a>', text)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def _table(headers: list[str], rows: list[list[Any]], *, row_attrs: list[str] | None = None, table_id: str = "") -> str:
    head = "".join(f"<th>{_inline(str(h))}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        attrs = row_attrs[i] if row_attrs else ""
        body.append(f"<tr{attrs}>" + "".join(f"<td>{c if str(c).startswith('<a ') else _inline(str(c))}</td>" for c in row) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f'<table class="sortable"{ident}><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body) + "\n</tbody></table>"


def _headlines_html(df: pd.DataFrame) -> list[str]:
    out = ['<section id="headlines"><h2>Headlines</h2>', f'<p class="note">{_inline(HEADLINE_INTRO)}</p>']
    tier = None
    for kind, payload in headline_blocks(df):
        if kind == "h3":
            if tier is not None:
                out.append("</section>")
            tier = payload.split(" ", 1)[0]
            out.append(f'<section data-tier="{html.escape(tier)}"><h3>{_inline(payload)}</h3>')
        elif kind == "p":
            out.append(f"<p>{_inline(payload)}</p>")
        else:
            out.append(_table(*payload))
    if tier is not None:
        out.append("</section>")
    return out + ["</section>"]


def _filters(df: pd.DataFrame) -> str:
    parts = ['<div class="filters">']
    for key in FILTERS:
        values = sorted(set(df[key]), key=lambda v: (TIER_ORDER.index(v) if key == "tier" and v in TIER_ORDER else 99, str(v)))
        options = '<option value="">all</option>' + "".join(f'<option value="{html.escape(str(v))}">{html.escape(str(v))}</option>' for v in values)
        parts.append(f'<label>{key} <select class="filter" name="{key}">{options}</select></label>')
    return "".join(parts) + "</div>"


def _cells_html(df: pd.DataFrame, records: list[dict[str, Any]]) -> list[str]:
    paths = {r["cell_id"]: f"results/{r['suite']}/{r['cell_id']}.json" for r in records}
    headers = ["tier", "track", "encoder", "scenario", "constraint", "attack", "defense", "budget", "seed", "status",
               *CELL_METRICS, "record"]
    order = df.assign(_t=df["tier"].map(lambda t: TIER_ORDER.index(t) if t in TIER_ORDER else 99),
                      _k=df["track"].map(lambda t: TRACK_ORDER.index(t) if t in TRACK_ORDER else 99))
    order = order.sort_values(["_t", "_k", "scenario", "attack", "defense", "encoder", "budget", "constraint", "seed", "cell_id"])
    rows, attrs = [], []
    for row in order.to_dict("records"):
        metrics = []
        for m in CELL_METRICS:
            value = row.get(f"m:{m}")
            scale = 1.0 if m == "privacy_epsilon" else 100.0
            metrics.append("" if value is None or pd.isna(value) else f"{value * scale:.1f}")
        link = f'<a href="{html.escape(paths[row["cell_id"]])}">json</a>'
        rows.append([row["tier"], row["track"], row["encoder"], row["scenario"], row["constraint"], row["attack"],
                     row["defense"], f"{row['budget']:g}", row["seed"], row["status"], *metrics, link])
        attrs.append("".join(f' data-{k}="{html.escape(str(row[k]))}"' for k in FILTERS))
    return ['<section id="cells"><h2>Every cell</h2>',
            '<p class="note">Metrics in points (privacy ε as is); <span id="cell-count"></span> cells shown. '
            "Click a header to sort; the filters above apply here and to the headlines.</p>",
            _table(headers, rows, row_attrs=attrs, table_id="cells-table"), "</section>"]


def render_site(results_dir: Path, plots_dir: Path) -> str:
    """The page's HTML (deterministic: same files, same bytes)."""
    records, _ = load_records(results_dir)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>PoisonBench leaderboard</title>",
           f"<style>{STYLE}</style>", f"<script>{SCRIPT}</script>", "</head><body>", "<h1>PoisonBench leaderboard</h1>",
           '<p class="note">Generated by <code>python -m benchmark leaderboard</code> from the result files under '
           "<code>leaderboard/results/</code>, like <a href=\"README.md\">README.md</a>; do not edit by hand.</p>"]
    if not records:
        return "\n".join(out + ["<p>No results yet.</p>", "</body></html>"]) + "\n"
    df = _rows(records)
    out.append(_filters(df))
    out += _headlines_html(df)
    tiers = [t for t in TIER_ORDER if t in set(df["tier"])]
    out.append('<section id="figures"><h2>Figures</h2>')
    for tier in tiers:
        out.append(f'<section data-tier="{tier}"><h3>{tier} tier</h3><p class="note">{_inline(TIER_NOTES[tier])}.</p>')
        for png in sorted(Path(plots_dir).glob(f"{tier}-*.png")):
            out.append(f'<img src="plots/{html.escape(png.name)}" alt="{html.escape(png.stem)}">')
        out.append("</section>")
    examples = sorted(Path(plots_dir).glob("examples-*.png"))
    if examples:
        out.append('<section id="examples"><h3>Poisoned examples</h3><p class="note">Clean vs poisoned images per attack '
                   "(<code>python -m benchmark examples</code>).</p>")
        out += [f'<img src="plots/{html.escape(p.name)}" alt="{html.escape(p.stem)}">' for p in examples]
        out.append("</section>")
    out.append("</section>")
    out += _cells_html(df, records)
    return "\n".join(out + ["</body></html>"]) + "\n"


def write_site(results_dir: Path, plots_dir: Path, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_site(results_dir, plots_dir))
    return output


def chrome_driver(*, width: int = 1400, height: int = 1000) -> Any:
    """Headless Chromium through Selenium, with Debian's ``chromium`` and ``chromedriver`` (no download),
    the browser console kept for reading (``driver.get_log("browser")``)."""
    import shutil

    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))


def screenshot(page: Path, output: Path) -> Path:
    """A PNG of ``page`` in headless Chromium."""
    driver = chrome_driver(height=1600)
    try:
        driver.get(Path(page).resolve().as_uri())
        output.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(output))
    finally:
        driver.quit()
    return output
