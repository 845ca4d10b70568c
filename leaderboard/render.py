"""Views of the leaderboard: a rich terminal table, Markdown, JSON and one self-contained HTML page.

The HTML page makes no network request: CSS, JavaScript and the SVG scatter plot are inline, and a
Content-Security-Policy (``default-src 'none'``, script and style allowed only by their sha256) forbids everything
else, so even a string that escaped escaping could not run. Every string that comes from a submission (model names,
submitters, devices) is escaped for its output: HTML entities in HTML, entities + backslashes in Markdown, plain
``rich.text.Text`` in the terminal (no console markup).

Page behaviour: click a column header to sort (again to reverse); ``?sort=<key>&dir=asc|desc`` sorts on load (keys:
``band model tier primary ci_low ci_high task<N> camera_l1 psnr ssim fps parameters submitted``); ``?expand=all``
opens every per-task detail row; the table records the applied order in ``data-sort-key``/``data-sort-dir`` and
the body gets ``data-ready="1"`` once the script ran.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from leaderboard.names import printable
from leaderboard.ranking import BAND_RULE, Board, Row

TIER_NOTE = (
    "Tiers: self-reported = bundle checked (schema, suite and IDM hashes, completeness, every aggregate recomputed "
    "from the per-item records); verified = videos uploaded, hashes checked and re-scored here with the official IDM; "
    "reproduced = re-generated here from the checkpoint with the recorded seeds. Self-reported rows are ranked apart "
    "(bands s1, s2, ...): their predicted labels are a claim. 'above ceiling' marks a row scoring above the IDM on "
    "the real frames, which no model can honestly do. Frames/s are as reported."
)
ABOVE_CEILING = "above ceiling!"


def payload(boards: Sequence[Board]) -> dict[str, Any]:
    """The JSON document of ``GET /api/leaderboard`` and ``export --format json``."""
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "band_rule": BAND_RULE,
        "tiers": TIER_NOTE,
        "boards": [board.to_json() for board in boards],
    }


def render_json(boards: Sequence[Board]) -> str:
    return json.dumps(payload(boards), indent=1, allow_nan=False)


# -- shared formatting -----------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(row: Row) -> str:
    return f"[{row.ci_low:.3f}, {row.ci_high:.3f}]"


def _fps(row: Row) -> str:
    return "-" if row.fps is None else f"{row.fps:.3g} ({printable(row.device or '-')})"


def _params(value: int | None) -> str:
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return str(value)


def _version(row: Row) -> str:
    return row.model_version[:12]


def _band(row: Row) -> str:
    if row.kind == "reference":
        return "ceiling"
    return str(row.band) if row.checked else f"s{row.band}"


def _band_order(row: Row) -> int | str:
    """Sort key of the band column: checked bands, then self-reported ones."""
    return "" if row.kind == "reference" else row.band if row.checked else 1000 + row.band


def _tier(row: Row) -> str:
    return row.tier + (f" {ABOVE_CEILING}" if row.above_ceiling else "")


def _model(row: Row) -> str:
    return printable(row.model) + (f" @{_version(row)}" if row.model_version else "")


def task_label(name: str) -> str:
    """A readable task name: the taxonomy's ``"('back', 'forward')"`` becomes ``back/forward``."""
    import ast

    if name.startswith("(") and name.endswith(")"):
        try:
            parts = ast.literal_eval(name)
        except (ValueError, SyntaxError):
            return name
        if isinstance(parts, tuple) and all(isinstance(p, str) for p in parts):
            return "/".join(parts)
    return name


def _title(board: Board) -> str:
    s = board.suite
    return f"{s.name} v{s.version}"


def _subtitle(board: Board) -> str:
    s = board.suite
    return (f"{s.domain}, {len(s.item_ids)} items, suite sha256 {s.sha256[:12]}, IDM {s.idm_name} "
            f"(sha256 {s.idm_sha256[:12]}), evaluator v{board.evaluator_version}, primary: mean macro-F1")  # fmt: skip


def _columns(board: Board) -> list[str]:
    columns = ["band", "model", "tier", "mean macro-F1 [95% CI]", *map(task_label, board.task_names)]
    columns += ["camera L1"] if board.has_camera else []
    columns += ["PSNR"] if board.has_psnr else []
    columns += ["SSIM"] if board.has_ssim else []
    return columns + ["frames/s (device)", "params", "submitted"]


def _cells(board: Board, row: Row) -> list[str]:
    """Row cells as plain text (escape for the target format afterwards); the model cell is name + version."""
    cells = [_band(row), _model(row), _tier(row),
             f"{row.value:.3f} {_ci(row)}", *[_num(row.tasks.get(t)) for t in board.task_names]]  # fmt: skip
    cells += [_num(row.camera_l1)] if board.has_camera else []
    cells += [_num(row.psnr, 2)] if board.has_psnr else []
    cells += [_num(row.ssim)] if board.has_ssim else []
    return cells + [_fps(row), _params(row.parameters), row.submitted_at[:10]]


# -- terminal ----------------------------------------------------------------------------------------------------------


NARROW_TERMINAL = 120
"""Below this console width the terminal table keeps only the columns a reader ranks by (band, model, tier, score,
interval, frames/s, date); the per-task table follows."""


def print_terminal(boards: Sequence[Board], console=None) -> None:
    """Rich tables per board (the ranking, then per-task macro-F1); submitted strings are rendered as plain text,
    never as console markup, with control characters escaped. Narrow consoles (< :data:`NARROW_TERMINAL` columns, e.g.
    80) get a compact table whose cells wrap instead of being cut."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    if not boards:
        console.print("No suite to show: register one with `rlir leaderboard suite add SUITE --idm IDM`.")
    narrow = console.width < NARROW_TERMINAL
    for board in boards:
        columns = _columns(board)
        first_task = 4
        tasks = slice(first_task, first_task + len(board.task_names))
        if narrow:
            main = ["band", "model", "tier", "F1 [95% CI]", "frames/s", "submitted"]
        else:
            main = [c for i, c in enumerate(columns) if not tasks.start <= i < tasks.stop]
        # narrow: no vertical rules and wrapping cells, so rich never has to crop a column at the console's edge
        frame = {"box": box.SIMPLE_HEAD, "pad_edge": False} if narrow else {}
        table = Table(title=Text(_title(board)), caption=Text(_subtitle(board)), caption_justify="left", **frame)
        for i, name in enumerate(main):
            justify = "left" if i in (1, 2) else "right"
            fixed = narrow and i not in (1, 2)  # numbers and dates never wrap; names and tiers do
            table.add_column(Text(name), justify=justify, min_width=(4, 14, 13)[i] if i < 3 else None,
                             overflow="fold", no_wrap=fixed)  # fmt: skip
        per_task = Table(title=Text(f"{_title(board)}: macro-F1 per task"), **frame)
        per_task.add_column(Text("model"), min_width=14, overflow="fold")
        for name in columns[tasks]:  # narrow: a score needs 5 characters; the task names fold onto more lines
            per_task.add_column(Text(name), justify="right", overflow="fold", max_width=6 if narrow else None)
        previous_checked = None
        for row in board.rows:
            cells = _cells(board, row)
            style = "italic" if row.kind == "reference" else None
            section = row.kind != "reference" and row.checked
            if previous_checked and not section and row.kind != "reference":
                table.add_section()  # the self-reported ranking starts here
            previous_checked = section or row.kind == "reference"
            if narrow:
                fps = "-" if row.fps is None else f"{row.fps:.3g}"
                shown = [_band(row), _model(row), _tier(row), f"{row.value:.3f}\n{_ci(row)}", fps, row.submitted_at[:10]]
            else:
                shown = [c for i, c in enumerate(cells) if not tasks.start <= i < tasks.stop]
            table.add_row(*(Text(c) for c in shown), style="bold red" if row.above_ceiling else style)
            per_task.add_row(Text(cells[1]), *(Text(c) for c in cells[tasks]), style=style)
        if not board.rows:
            table.add_row(*(Text("-") for _ in main))
        console.print(table)
        if board.rows and board.task_names:
            console.print(per_task)
    console.print(Text("Rank bands: " + BAND_RULE), style="dim")


# -- markdown ----------------------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~<>-])")


def md_escape(text: str) -> str:
    """Escape a submitted string for a Markdown table cell (HTML entities, Markdown punctuation, no line breaks)."""
    text = html.escape(printable(" ".join(str(text).split())), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def render_markdown(boards: Sequence[Board]) -> str:
    lines = ["# rlir leaderboard: action following", ""]
    if not boards:
        lines += ["No suites registered yet.", ""]
    for board in boards:
        columns = _columns(board)
        lines += [f"## {md_escape(_title(board))}", "", md_escape(_subtitle(board)), ""]
        lines += ["| " + " | ".join(md_escape(c) for c in columns) + " |", "|" + "---|" * len(columns)]
        for row in board.rows:
            cells = [md_escape(c) for c in _cells(board, row)]
            if row.kind == "reference":
                cells = [f"*{c}*" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        if not board.rows:
            lines.append("| " + " | ".join("-" for _ in columns) + " |")
        lines.append("")
    lines += [f"**Rank bands.** {BAND_RULE}", "", TIER_NOTE, ""]
    return "\n".join(lines)


# -- html --------------------------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2430;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 2px}.sub{color:#5a6473;margin:0 0 10px}
table.board{border-collapse:collapse;width:100%;margin:8px 0}
table.board th,table.board td{padding:4px 8px;border-bottom:1px solid #e3e7ee;text-align:right;white-space:nowrap}
table.board th{cursor:pointer;background:#f4f6fa;user-select:none}table.board th:hover{background:#e8edf5}
table.board th[aria-sort=ascending]::after{content:" \\25B4"}table.board th[aria-sort=descending]::after{content:" \\25BE"}
table.board .model{text-align:left;white-space:normal}td.model small{color:#6b7585}.scroll{overflow-x:auto}
tr.reference td{background:#fbf6e6;font-style:italic}tr.detail td{background:#fafbfd;text-align:left}
.tier{border-radius:8px;padding:1px 7px;font-size:12px;color:#fff;background:#7a8392}
.tier-verified{background:#2f6fd6}.tier-reproduced{background:#1f9254}.kind{font-size:12px;color:#8a6d00}
button.expand{border:0;background:none;cursor:pointer;font-size:13px;padding:0 4px}
table.tasks{border-collapse:collapse;margin:4px 0 10px}tr.detail td{white-space:normal}
table.tasks td,table.tasks th{padding:2px 10px;cursor:auto;text-align:right;background:none}
table.facts th{text-align:left}table.facts td{text-align:left;font-family:ui-monospace,monospace;font-size:12px}
svg.scatter{max-width:720px;width:100%;height:auto;border:1px solid #e3e7ee;background:#fff}
svg .axis{stroke:#9aa3b2}svg .grid{stroke:#edf0f5}svg text{font-size:11px;fill:#3a4352}
svg .ci{stroke-width:1.5}svg .ceiling{stroke:#b08900;stroke-dasharray:5 4}
.t-self-reported{fill:#7a8392;stroke:#7a8392}.t-verified{fill:#2f6fd6;stroke:#2f6fd6}
.t-reproduced{fill:#1f9254;stroke:#1f9254}.note{color:#5a6473;max-width:980px}footer{margin-top:28px}
tr.self-reported td{background:#f6f6f6;color:#5a6473}.flag{color:#b3261e;font-weight:bold;font-size:12px}
"""

_JS = """
(function () {
  "use strict";
  function value(row, index, type) {
    var cell = row.cells[index];
    var raw = cell ? cell.getAttribute("data-value") : null;
    if (raw === null || raw === "") { return null; }
    return type === "num" ? parseFloat(raw) : raw.toLowerCase();
  }
  function sortTable(table, key, dir) {
    var heads = table.tHead.rows[0].cells, index = -1, type = "str", i;
    for (i = 0; i < heads.length; i++) {
      if (heads[i].getAttribute("data-key") === key) { index = i; type = heads[i].getAttribute("data-type"); }
    }
    if (index < 0) { return false; }
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.querySelectorAll("tr.entry"));
    rows.sort(function (a, b) {
      var x = value(a, index, type), y = value(b, index, type);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return dir === "asc" ? order : -order;
    });
    rows.forEach(function (row) {
      body.appendChild(row);
      var detail = document.getElementById(row.getAttribute("data-detail"));
      if (detail) { body.appendChild(detail); }
    });
    table.setAttribute("data-sort-key", key);
    table.setAttribute("data-sort-dir", dir);
    for (i = 0; i < heads.length; i++) {
      heads[i].setAttribute("aria-sort", i === index ? (dir === "asc" ? "ascending" : "descending") : "none");
    }
    return true;
  }
  function toggle(button, open) {
    var detail = document.getElementById(button.getAttribute("aria-controls"));
    if (!detail) { return; }
    detail.hidden = !open;
    button.setAttribute("aria-expanded", open ? "true" : "false");
    button.textContent = open ? "\\u25BE" : "\\u25B8";
  }
  var tables = document.querySelectorAll("table.board");
  Array.prototype.forEach.call(tables, function (table) {
    table.tHead.addEventListener("click", function (event) {
      var head = event.target.closest("th[data-key]");
      if (!head) { return; }
      var key = head.getAttribute("data-key");
      var dir = head.getAttribute("data-first") || "desc";
      if (table.getAttribute("data-sort-key") === key) {
        dir = table.getAttribute("data-sort-dir") === "asc" ? "desc" : "asc";
      }
      sortTable(table, key, dir);
    });
    table.tBodies[0].addEventListener("click", function (event) {
      var button = event.target.closest("button.expand");
      if (button) { toggle(button, button.getAttribute("aria-expanded") !== "true"); }
    });
  });
  var params = new URLSearchParams(window.location.search);
  if (params.get("sort")) {
    var dir = params.get("dir") === "asc" ? "asc" : "desc";
    Array.prototype.forEach.call(tables, function (table) { sortTable(table, params.get("sort"), dir); });
  }
  if (params.get("expand") === "all") {
    Array.prototype.forEach.call(document.querySelectorAll("button.expand"), function (b) { toggle(b, true); });
  }
  document.body.setAttribute("data-ready", "1");
})();
"""


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


HTML_CSP = (
    f"default-src 'none'; script-src {_sha256_source(_JS)}; style-src {_sha256_source(_CSS)}; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)
"""The page's Content-Security-Policy (also sent as a header by the server): only the page's own script and style."""


def _e(text: Any) -> str:
    return html.escape(printable(str(text)), quote=True)


def _attr_num(value: float | int | None) -> str:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else repr(value)


def render_html(boards: Sequence[Board], *, title: str = "rlir leaderboard") -> str:
    """One self-contained page: a sortable table per board with expandable per-task rows, an F1-vs-frames/s
    scatter plot (log x) and the rank-band rule as a footnote."""
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(HTML_CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>",
        '<body data-ready="0">',
        f"<h1>{_e(title)}: action following</h1>",
        f'<p class="sub">How faithfully world models follow actions, read back from their videos by an inverse '
        f"dynamics model. Every number is recomputed from per-item records. Generated {_e(generated)}.</p>",
    ]
    if not boards:
        parts.append("<p>No suites registered yet.</p>")
    for index, board in enumerate(boards):
        parts += _board_html(board, index)
    parts += [
        '<footer class="note"><p id="band-rule"><sup>*</sup> <b>Rank bands.</b> ' + _e(BAND_RULE) + "</p>",
        f"<p>{_e(TIER_NOTE)}</p></footer>",
        f"<script>{_JS}</script></body></html>",
    ]
    return "\n".join(parts)


def _board_html(board: Board, index: int) -> list[str]:
    heads = [("band", "num", "asc", "band<sup>*</sup>", ""), ("model", "str", "asc", "model", "model"),
             ("tier", "str", "asc", "tier", ""), ("primary", "num", "desc", "mean macro-F1", ""),
             ("ci_low", "num", "desc", "CI low", ""), ("ci_high", "num", "desc", "CI high", "")]  # fmt: skip
    heads += [(f"task{i}", "num", "desc", _e(task_label(task)), "") for i, task in enumerate(board.task_names)]
    heads += [("camera_l1", "num", "asc", "camera L1", "")] if board.has_camera else []
    heads += [("psnr", "num", "desc", "PSNR", "")] if board.has_psnr else []
    heads += [("ssim", "num", "desc", "SSIM", "")] if board.has_ssim else []
    heads += [("fps", "num", "desc", "frames/s", ""), ("parameters", "num", "asc", "params", ""),
              ("submitted", "str", "desc", "submitted", "")]  # fmt: skip
    out = [
        f'<section class="suite" id="board-{index}">',
        f"<h2>{_e(_title(board))}</h2>",
        f'<p class="sub">{_e(_subtitle(board))}</p>',
        f'<div class="scroll"><table class="board" id="table-{index}" data-sort-key="band" data-sort-dir="asc"><thead><tr>',
        "".join(
            f'<th data-key="{key}" data-type="{kind}" data-first="{first}"{_class(cls)}>{label}</th>'
            for key, kind, first, label, cls in heads
        ),
        "</tr></thead><tbody>",
    ]
    if not board.rows:
        out.append(f'<tr><td colspan="{len(heads)}" class="model">No submissions yet.</td></tr>')
    for row in board.rows:
        out += _row_html(board, row, index, len(heads))
    out.append("</tbody></table></div>")
    out.append(_scatter_svg(board, index))
    out.append("</section>")
    return out


def _class(cls: str) -> str:
    return f' class="{cls}"' if cls else ""


def _td(text: str, value: Any = None, cls: str = "") -> str:
    data = "" if value is None else f' data-value="{_e(value)}"'
    return f"<td{_class(cls)}{data}>{text}</td>"


def _row_html(board: Board, row: Row, index: int, width: int) -> list[str]:
    detail_id = f"detail-{index}-{row.submission_id}"
    reference = row.kind == "reference"
    band = _td(_e(_band(row)), _band_order(row))
    version = f" <small>@{_e(_version(row))}</small>" if row.model_version else ""
    badge = ' <span class="kind">reference</span>' if reference else ""
    model = (f'<button class="expand" type="button" aria-expanded="false" aria-controls="{detail_id}">&#9656;</button>'
             f"{_e(row.model)}{version}{badge}")  # fmt: skip
    cells = [
        band,
        _td(model, row.model, "model"),
        _td(f'<span class="tier tier-{_e(row.tier)}">{_e(row.tier)}</span>'
            + (f' <span class="flag">{ABOVE_CEILING}</span>' if row.above_ceiling else ""), row.tier),
        _td(f"{row.value:.3f}", _attr_num(row.value)),
        _td(f"{row.ci_low:.3f}", _attr_num(row.ci_low)),
        _td(f"{row.ci_high:.3f}", _attr_num(row.ci_high)),
        *[_td(_num(row.tasks.get(t)), _attr_num(row.tasks.get(t))) for t in board.task_names],
    ]
    cells += [_td(_num(row.camera_l1), _attr_num(row.camera_l1))] if board.has_camera else []
    cells += [_td(_num(row.psnr, 2), _attr_num(row.psnr))] if board.has_psnr else []
    cells += [_td(_num(row.ssim), _attr_num(row.ssim))] if board.has_ssim else []
    fps = "-" if row.fps is None else f"{row.fps:.3g} <small>{_e(row.device)}</small>"
    cells += [_td(fps, _attr_num(row.fps)), _td(_e(_params(row.parameters)), _attr_num(row.parameters)),
              _td(_e(row.submitted_at[:10]), row.submitted_at)]  # fmt: skip
    classes = "entry reference" if reference else "entry" if row.checked else "entry self-reported"
    scores = ("f1_macro", "precision_macro", "recall_macro", "f1_micro", "precision_micro", "recall_micro")
    tasks = "".join(
        f"<tr><th>{_e(task_label(t))}</th>"
        + "".join(f"<td>{_num(row.task_scores.get(t, {}).get(k))}</td>" for k in scores)
        + "</tr>"
        for t in board.task_names
    )
    task_head = "<tr><th>task</th>" + "".join(f"<th>{k.replace('_', ' ')}</th>" for k in scores) + "</tr>"
    facts = [("submission", f"#{row.submission_id}"), ("submitter", row.submitter), ("submitted", row.submitted_at),
             ("model version (checkpoint sha256)", row.model_version or "-"), ("bundle sha256", row.bundle_sha256),
             ("items", str(row.n_items)), ("RLIR reward (mean)", _num(row.reward_mean)),
             ("device", f"{row.device or '-'} {row.device_name}"), ("envs", str(row.num_envs or "-"))]  # fmt: skip
    if row.sampling:
        facts.append(("sampling", row.sampling))
    facts += [(f"{name} (reported)", f"{value:.4g}") for name, value in (("LPIPS", row.lpips), ("FVD", row.fvd))
              if value is not None]  # fmt: skip
    facts_html = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    if row.previews:  # local files: the page links them where the leaderboard's artifact directory is
        links = " ".join(f'<a href="{_e(p.resolve().as_uri())}">{_e(p.stem)}</a>' for p in row.previews)
        facts_html += f"<tr><th>previews</th><td>{links}</td></tr>"
    return [
        f'<tr class="{classes}" data-detail="{detail_id}" data-submission="{row.submission_id}">{"".join(cells)}</tr>',
        f'<tr class="detail" id="{detail_id}" hidden><td colspan="{width}">'
        f'<table class="tasks"><thead>{task_head}</thead><tbody>{tasks}</tbody></table>'
        f'<table class="tasks facts"><tbody>{facts_html}</tbody></table></td></tr>',
    ]


_LABEL_CHAR_WIDTH, _LABEL_LINE = 6.5, 13.0  # px of one character and one line of the plot's 11px labels (generous)


def _scatter_svg(board: Board, index: int) -> str:
    """Primary metric (with its 95% CI) against frames/s on a log axis; the ceiling as a dashed line."""
    points = [r for r in board.rows if r.kind != "reference" and r.fps is not None and r.fps > 0]
    ceilings = [r for r in board.rows if r.kind == "reference"]
    if not points:
        return (
            f'<p class="note" id="scatter-{index}">No submission reports throughput yet, so no F1 vs frames/s plot.</p>'
        )
    width, height, left, right, top, bottom = 720, 380, 56, 150, 16, 44
    lo_x = math.floor(math.log10(min(r.fps for r in points)))
    hi_x = max(math.ceil(math.log10(max(r.fps for r in points))), lo_x + 1)
    ys = [r.ci_low for r in points] + [r.ci_high for r in points] + [r.value for r in ceilings]
    # round ticks: the axis spans whole steps of 0.05 / 0.1 / 0.2, so every label is a short round number
    step = 0.05 if max(ys) - min(ys) < 0.3 else 0.1 if max(ys) - min(ys) < 0.6 else 0.2
    lo_y = max(0.0, math.floor(round((min(ys) - 0.02) / step, 6)) * step)
    hi_y = min(1.0, math.ceil(round((max(ys) + 0.02) / step, 6)) * step)
    n_steps = max(1, round((hi_y - lo_y) / step))
    hi_y = lo_y + n_steps * step

    def x(fps: float) -> float:
        return left + (math.log10(fps) - lo_x) / (hi_x - lo_x) * (width - left - right)

    def y(value: float) -> float:
        return top + (hi_y - value) / (hi_y - lo_y) * (height - top - bottom)

    out = [f'<svg class="scatter" id="scatter-{index}" viewBox="0 0 {width} {height}"'
           f' role="img" aria-label="mean macro-F1 against frames per second">']  # fmt: skip
    label_every = 1 + (hi_x - lo_x) // 7  # at most ~7 labelled decades (frames/s are bounded by validation)
    for decade in range(lo_x, hi_x + 1):
        px = x(10.0**decade)
        out.append(f'<line class="grid" x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{height - bottom}"/>')
        if (decade - lo_x) % label_every == 0:
            out.append(f'<text x="{px:.1f}" y="{height - bottom + 16}" text-anchor="middle">{10.0**decade:g}</text>')
    for k in range(n_steps + 1):
        value = lo_y + step * k
        py = y(value)
        out.append(f'<line class="grid" x1="{left}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}"/>')
        out.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{value:.2f}</text>')
    out.append(f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}"/>')
    out.append(f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}"/>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 8}" text-anchor="middle">frames/s (log scale, '
               "as reported)</text>")  # fmt: skip
    out.append(f'<text x="14" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(top + height - bottom) / 2:.0f})">mean macro-F1</text>')  # fmt: skip
    for ceiling in ceilings:
        py = y(ceiling.value)
        out.append(f'<line class="ceiling" x1="{left}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}"/>')
        out.append(f'<text x="{left + 6}" y="{py - 5:.1f}">{_e(_short(ceiling.model, 40))}: {ceiling.value:.3f}</text>')
    placed: list[tuple[float, float, float]] = []  # (left, right, baseline) of the labels drawn so far
    for row in points:
        px, py = x(row.fps), y(row.value)
        tier = f"t-{_e(row.tier)}"
        label = _short(row.model)
        # models of near equal score and speed would print their names over each other: a label that would meet
        # one already drawn (rows come best first) moves down a line until it is clear
        label_left, label_right, label_y = px + 7, px + 7 + _LABEL_CHAR_WIDTH * len(label), py - 6
        while any(label_left < r and l < label_right and abs(label_y - b) < _LABEL_LINE for l, r, b in placed):
            label_y += _LABEL_LINE
        placed.append((label_left, label_right, label_y))
        out.append(f'<g class="point {tier}"><title>{_e(row.model)}: {row.value:.3f} [{row.ci_low:.3f}, '
                   f'{row.ci_high:.3f}], {row.fps:.3g} frames/s ({_e(row.device)})</title>'
                   f'<line class="ci {tier}" x1="{px:.1f}" y1="{y(row.ci_low):.1f}" x2="{px:.1f}" '
                   f'y2="{y(row.ci_high):.1f}"/>'
                   f'<circle class="{tier}" cx="{px:.1f}" cy="{py:.1f}" r="4.5"/>'
                   f'<text x="{label_left:.1f}" y="{label_y:.1f}">{_e(label)}</text></g>')  # fmt: skip
    legend_y = top + 8
    for i, tier in enumerate(("self-reported", "verified", "reproduced")):
        out.append(f'<circle class="t-{tier}" cx="{width - right + 12}" cy="{legend_y + 18 * i}" r="4.5"/>'
                   f'<text x="{width - right + 22}" y="{legend_y + 18 * i + 4}">{tier}</text>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
