"""The board as one static HTML page, ``leaderboard/index.html``, from the same result files and the same
numbers as ``leaderboard/README.md`` (``python -m benchmark leaderboard`` writes both; ``--check`` compares
both). No torch, no network, no external script: the page's small script sorts a table when a header is
clicked (blank cells last, whatever the direction) and filters by tier, track, scenario, attack and defense:
the tier and track filters apply to the headlines, the figures and the cells table; the others to the cells
table only (the headlines pool over scenarios and list the attacks and the defenses side by side).

Sections: the headlines (strongest attacks; each defense's accuracy restored beside its cost), the figures
under ``plots/``, and every cell with its main metrics and a link to its JSON record. The cells table is
written compactly (about 2,400 rows): no attributes on its rows (the script filters on the text of the
columns whose header names a filter), optional end tags (``</td>``, ``</tr>``) left out, and each scenario by
its name, with its data in the note and the filter, where the name alone says which scenario it is.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.tracks.info import track_names, track_order
from leaderboard.render import (
    HEADLINE_INTRO,
    PUBLISHED_INTRO,
    TIER_NOTES,
    TIER_ORDER,
    _rows,
    headline_blocks,
    load_records,
    published_blocks,
)

CELL_METRICS = ("accuracy_drop", "accuracy_drop_poisoned_probe", "asr_gain", "defense_cost", "privacy_epsilon")
FILTERS = ("tier", "track", "scenario", "attack", "defense")
CELL_COLUMNS = ("tier", "track", "encoder", "scenario", "constraint", "attack", "defense", "budget", "seed", "status",
                *CELL_METRICS, "record")
FILTER_NOTE = ("The tier and track filters apply to the headlines, the figures (a track's figure by its track) and the "
               "table of every cell; the scenario, attack and defense filters apply to the table of every cell only: "
               "each headline row pools its tier's and track's cells over every scenario, and the headline tables list "
               "the attacks and the defenses side by side.")
TRACK_LINE = re.compile(r"\*\*([a-z-]+)\*\*(?: \([^)]*\))? — ")  # "**track** (encoders …) — "

SCRIPT = """
function cellValue(row, i) {
  const cell = row.cells[i];
  const text = cell ? cell.textContent.trim() : "";
  if (text === "") { return null; }
  const number = parseFloat(text);
  return isNaN(number) ? text.toLowerCase() : number;
}
function compareValues(x, y, ascending) {
  if (x === y) { return 0; }
  if (x === null) { return 1; }
  if (y === null) { return -1; }
  const before = (typeof x === typeof y) ? x < y : typeof x === "number";
  return (before ? -1 : 1) * (ascending ? 1 : -1);
}
function sortTable(table, column) {
  const body = table.tBodies[0];
  const ascending = table.dataset.sortColumn === String(column) ? table.dataset.sortOrder !== "asc" : false;
  const keyed = Array.from(body.rows, function (row) { return [cellValue(row, column), row]; });
  keyed.sort(function (a, b) { return compareValues(a[0], b[0], ascending); });
  keyed.forEach(function (pair) { body.appendChild(pair[1]); });
  table.dataset.sortColumn = String(column);
  table.dataset.sortOrder = ascending ? "asc" : "desc";
}
function matches(element, wanted) {
  return ["tier", "track"].every(function (key) {
    return wanted[key] === undefined || element.dataset[key] === undefined || element.dataset[key] === wanted[key];
  });
}
function filterCells(wanted) {
  const table = document.getElementById("cells-table");
  if (table === null) { return; }
  const columns = {};
  table.querySelectorAll("thead th[data-filter]").forEach(function (th) { columns[th.dataset.filter] = th.cellIndex; });
  let shown = 0;
  Array.from(table.tBodies[0].rows).forEach(function (row) {
    let show = true;
    for (const key in wanted) {
      if (key in columns && row.cells[columns[key]].textContent.trim() !== wanted[key]) { show = false; }
    }
    row.hidden = !show;
    if (show) { shown += 1; }
  });
  document.getElementById("cell-count").textContent = String(shown);
}
function applyFilters() {
  const wanted = {};
  document.querySelectorAll("select.filter").forEach(function (s) { if (s.value !== "") { wanted[s.name] = s.value; } });
  filterCells(wanted);
  document.querySelectorAll("[data-track]").forEach(function (element) { element.hidden = !matches(element, wanted); });
  document.querySelectorAll("section[data-tier]").forEach(function (section) {
    const parts = Array.from(section.querySelectorAll("[data-track]"));
    section.hidden = !matches(section, wanted) || (parts.length > 0 && parts.every(function (p) { return p.hidden; }));
  });
}
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.sortable th").forEach(function (th) {
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
    text = html.escape(text).replace("](#published-numbers)", "](index.html#published)")  # on this page too
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\[([^\]]+)\]\(#([^)\s]+)\)", r'<a href="README.md#\2">\1</a>', text)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    """A sortable table of headline cells (our markdown's inline marks; a cell that is a link as it is)."""
    head = "".join(f"<th>{_inline(str(h))}</th>" for h in headers)
    body = ["<tr>" + "".join(f"<td>{c if str(c).startswith('<a ') else _inline(str(c))}</td>" for c in row) + "</tr>" for row in rows]
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body) + "\n</tbody></table>"


def _attrs(**values: str) -> str:
    """``data-*`` attributes, escaped, in the order given."""
    return "".join(f' data-{key}="{html.escape(value)}"' for key, value in values.items())


def _track_of(text: str) -> str | None:
    """The track a headline paragraph opens (``**downstream** — ...``), else None."""
    match = TRACK_LINE.match(text)
    return match.group(1) if match and match.group(1) in track_names() else None


def _headlines_html(df: pd.DataFrame) -> list[str]:
    """The headline blocks, a ``<section data-tier>`` per tier and, inside it, a ``<div data-tier data-track>``
    per track holding that track's paragraphs and tables, so that the tier and track filters hide them."""
    out = ['<section id="headlines"><h2>Headlines</h2>', f'<p class="note">{_inline(HEADLINE_INTRO)}</p>']
    tier, track = None, None
    for kind, payload in headline_blocks(df):
        opens = _track_of(payload) if kind == "p" else None
        if track is not None and (kind == "h3" or opens):
            out.append("</div>")
            track = None
        if kind == "h3":
            if tier is not None:
                out.append("</section>")
            tier = payload.split(" ", 1)[0]
            out.append(f"<section{_attrs(tier=tier)}><h3>{_inline(payload)}</h3>")
            continue
        if opens and tier is not None:
            track = opens
            out.append(f'<div class="track"{_attrs(tier=tier, track=track)}>')
        out.append(f"<p>{_inline(payload)}</p>" if kind == "p" else _table(*payload))
    if track is not None:
        out.append("</div>")
    if tier is not None:
        out.append("</section>")
    return out + ["</section>"]


def _scenario_names(df: pd.DataFrame) -> dict[str, str]:
    """Each scenario (``finetune (mnist5k→mnist5k)``) as the cells table shows it: its name alone where no
    other scenario on the page has that name, else in full."""
    full = sorted(set(df["scenario"]))
    names = {s: s.split(" (", 1)[0] for s in full}
    counts = pd.Series(list(names.values())).value_counts()
    return {s: (n if counts[n] == 1 else s) for s, n in names.items()}


def _filter_options(df: pd.DataFrame, key: str, scenarios: dict[str, str]) -> list[tuple[str, str]]:
    """(value, label) per option of one filter; a value is the text of the cells table's column."""
    values = sorted(set(df[key]), key=lambda v: (TIER_ORDER.index(v) if key == "tier" and v in TIER_ORDER else 99, str(v)))
    if key == "scenario":
        return [(scenarios[v], v) for v in values]
    return [(str(v), str(v)) for v in values]


def _filters(df: pd.DataFrame) -> str:
    """The filters' drop-downs (``select.filter``, named after their key) and the note on where each applies."""
    scenarios = _scenario_names(df)
    parts = ['<div class="filters">']
    for key in FILTERS:
        options = '<option value="">all</option>' + "".join(
            f'<option value="{html.escape(value)}">{html.escape(label)}</option>' for value, label in _filter_options(df, key, scenarios))
        parts.append(f'<label>{key} <select class="filter" name="{key}">{options}</select></label>')
    return "".join(parts) + f'</div>\n<p class="note">{FILTER_NOTE}</p>'


def _sorted_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The cells in the table's order: tier, track (board order), scenario, attack, defense, the rest."""
    order = df.assign(_t=df["tier"].map(lambda t: TIER_ORDER.index(t) if t in TIER_ORDER else 99),
                      _k=df["track"].map(track_order))
    return order.sort_values(["_t", "_k", "scenario", "attack", "defense", "encoder", "budget", "constraint", "seed", "cell_id"])


def _metric_texts(row: dict[str, Any]) -> list[str]:
    """The row's main metrics in points (privacy ε as is), '' where the cell has none."""
    texts = []
    for m in CELL_METRICS:
        value = row.get(f"m:{m}")
        scale = 1.0 if m == "privacy_epsilon" else 100.0
        texts.append("" if value is None or pd.isna(value) else f"{value * scale:.1f}")
    return texts


def _cell_row(row: dict[str, Any], scenario: str, path: str) -> str:
    """One row of the cells table, compact: no attributes, no optional end tags, no whitespace."""
    texts = [row["tier"], row["track"], row["encoder"], scenario, row["constraint"], row["attack"], row["defense"],
             f"{row['budget']:g}", row["seed"], row["status"], *_metric_texts(row)]
    cells = "".join(f"<td>{html.escape(str(t))}" for t in texts)
    return f'<tr>{cells}<td><a href="{html.escape(path)}">json</a>'


def _cells_note(scenarios: dict[str, str]) -> str:
    """The note above the cells table: units, the link, the scenarios shown by name, sorting and filters."""
    named = "; ".join(html.escape(full) for full, short in scenarios.items() if short != full)
    return ('<p class="note">Metrics in points (privacy ε as is); <span id="cell-count"></span> cells shown; '
            "<em>record</em> links to the cell's JSON record" + (f"; a scenario by its name: {named}" if named else "") +
            ". Click a header to sort (blank cells last); the tier and track filters above apply here and to the "
            "headlines, the scenario, attack and defense filters here only.</p>")


def _cells_html(df: pd.DataFrame, records: list[dict[str, Any]]) -> list[str]:
    """Every cell, one compact row each (``_cell_row``), with its main metrics and a link to its record."""
    paths = {r["cell_id"]: f"results/{r['suite']}/{r['cell_id']}.json" for r in records}
    scenarios = _scenario_names(df)
    head = "".join(f"<th{_attrs(filter=h) if h in FILTERS else ''}>{h}</th>" for h in CELL_COLUMNS)
    rows = [_cell_row(row, scenarios[row["scenario"]], paths[row["cell_id"]]) for row in _sorted_cells(df).to_dict("records")]
    return ['<section id="cells"><h2>Every cell</h2>', _cells_note(scenarios),
            f'<table class="sortable" id="cells-table"><thead><tr>{head}</tr></thead><tbody>',
            *rows, "</tbody></table>", "</section>"]


def _figures_html(tiers: list[str], plots_dir: Path) -> list[str]:
    """The figures per tier (a figure of one track carries ``data-track``) and the poisoned examples."""
    out = ['<section id="figures"><h2>Figures</h2>']
    for tier in tiers:
        out.append(f'<section data-tier="{tier}"><h3>{tier} tier</h3><p class="note">{_inline(TIER_NOTES[tier])}.</p>')
        for png in sorted(Path(plots_dir).glob(f"{tier}-*.png")):
            track = next((t for t in track_names() if png.stem.endswith(f"-{t}")), None)
            out.append(f'<img src="plots/{html.escape(png.name)}" alt="{html.escape(png.stem)}"{_attrs(track=track) if track else ""}>')
        out.append("</section>")
    examples = sorted(Path(plots_dir).glob("examples-*.png"))
    if examples:
        out.append('<section id="examples"><h3>Poisoned examples</h3><p class="note">Clean vs poisoned images per attack '
                   "(<code>python -m benchmark examples</code>).</p>")
        out += [f'<img src="plots/{html.escape(p.name)}" alt="{html.escape(p.stem)}">' for p in examples]
        out.append("</section>")
    return out + ["</section>"]


def _published_html(df: pd.DataFrame) -> list[str]:
    """The published numbers beside the ``full`` tier's, as in README.md's *Published numbers*."""
    headers, rows = published_blocks(df)
    if not rows:
        return []
    return ['<section id="published"><h2>Published numbers</h2>', f'<p class="note">{_inline(PUBLISHED_INTRO)}</p>',
            _table(headers, rows), "</section>"]


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
    out += _figures_html(tiers, plots_dir)
    out += _published_html(df)
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
