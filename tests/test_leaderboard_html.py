"""The leaderboard's HTML page: self-contained, escaped, and working in a real (headless Chromium) browser.

Bundles here are synthetic but valid (aggregates computed from their records) and go through validation, the store
and the ranking like any submission; the model-based bundles are covered in test_leaderboard_store.py.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from evaluation.bundle import parse_bundle
from leaderboard.ranking import BAND_RULE, leaderboards
from leaderboard.render import HTML_CSP, render_html
from leaderboard.store import Store
from leaderboard.validate import CEILING_MODEL_NAME, submit_local
from tests.test_leaderboard_store import crafter_suite_record, synthetic_bundle

HOSTILE = [
    "<script>alert(1)</script>",
    '"; DROP TABLE submissions; --',
    "<img src=x onerror=alert(2)>",
    "</td></tr></table><h1 id=pwned>x</h1>",
    "'><svg onload=alert(3)>",
]
# (name, share of frames read correctly, frames/s, parameters)
MODELS = [("alpha", 0.9, 12.0, 300_000_000), ("Beta", 0.6, 150.0, 40_000_000), ("gamma", 0.75, None, None)]
MODELS += [(name, 0.3 + 0.1 * i, 2.0 * (i + 1), 1000 * i) for i, name in enumerate(HOSTILE)]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (CI's .ci/run installs the Debian package `chromium`)"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb-html")
    store = Store(root / "lb.db")
    suite = store.add_suite(crafter_suite_record())
    for seed, (name, accuracy, fps, parameters) in enumerate(MODELS):
        bundle = synthetic_bundle(suite, name, accuracy=accuracy, seed=seed, fps=fps, parameters=parameters)
        if name in HOSTILE:  # refused by validation today; stored straight, as a row from before names were checked
            store.add_submission(parse_bundle(bundle), tier="self-reported", submitter="<b>bold</b>")
        else:
            submit_local(json.dumps(bundle).encode(), store, submitter="bold")
    ceiling = synthetic_bundle(suite, CEILING_MODEL_NAME, accuracy=0.97, seed=99, fps=None)
    submit_local(json.dumps(ceiling).encode(), store, submitter="rlir", allow_reference=True)
    boards = leaderboards(store)
    page = root / "leaderboard.html"
    page.write_text(render_html(boards), encoding="utf-8")
    return page, boards


class _Elements(HTMLParser):
    """Every element (tag, attributes), the text, and the contents of <script>/<style> of a document."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.raw: dict[str, list[str]] = {"script": [], "style": []}
        self._inside: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._inside = tag if tag in self.raw else None

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        self._inside = None

    def handle_data(self, data):
        if self._inside in self.raw:
            self.raw[self._inside].append(data)
        else:
            self.text.append(data)


def _entries(elements: list[tuple[str, dict[str, str]]]) -> list[dict[str, str]]:
    return [attrs for tag, attrs in elements if tag == "tr" and "entry" in attrs.get("class", "").split()]


def test_page_is_self_contained_and_escaped(site):
    page, boards = site
    text = page.read_text()
    doc = _Elements(text)
    tags = [tag for tag, _ in doc.elements]
    assert tags.count("script") == 1 and tags.count("style") == 1
    assert not {"img", "iframe", "link", "object", "embed", "h1"} & set(
        tags[tags.index("body") + 2 :]
    )  # only the title h1
    assert all(not name.startswith("on") and name not in ("src", "href") for _, attrs in doc.elements for name in attrs)
    assert not re.search(r"url\(|@import|https?://", text)
    # the CSP allows exactly this page's script and style, by their sha256 computed here
    csp = next(attrs["content"] for tag, attrs in doc.elements if attrs.get("http-equiv") == "Content-Security-Policy")
    assert csp == HTML_CSP and csp.startswith("default-src 'none'")
    for kind in ("script", "style"):
        digest = base64.b64encode(hashlib.sha256("".join(doc.raw[kind]).encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in csp
    # hostile names are text: escaped in the source, intact once parsed
    visible = "".join(doc.text)
    for name in HOSTILE:
        assert html.escape(name) in text and name in visible
    assert "<b>bold</b>" in visible and "<b>bold</b>" not in text
    # one entry row per model plus the ceiling, which is marked and takes no band
    [board] = boards
    entries = _entries(doc.elements)
    assert len(entries) == len(MODELS) + 1 == len(board.rows)
    assert entries[0]["class"] == "entry reference" and board.rows[0].model == CEILING_MODEL_NAME
    assert [r.band for r in board.rows[1:]] == sorted(r.band for r in board.rows[1:]) and board.rows[1].band == 1
    assert html.escape(BAND_RULE) in text and 'id="band-rule"' in text
    # the scatter plot: one point per model that reports frames/s, the ceiling as a line
    plotted = sum(1 for tag, attrs in doc.elements if tag == "g" and "point" in attrs.get("class", ""))
    assert plotted == sum(1 for _, _, fps, _ in MODELS if fps is not None)
    assert any(tag == "line" and attrs.get("class") == "ceiling" for tag, attrs in doc.elements)


def test_labels_of_neighbouring_points_do_not_overlap(tmp_path):
    """Two models with the same score at nearly the same speed (a model and its post-trained twin) get their names on
    separate lines of the scatter plot."""
    store = Store(tmp_path / "lb.db")
    suite = store.add_suite(crafter_suite_record())
    for name, fps in [("crafter-mineworld-rlir", 73.6), ("crafter-mineworld", 64.6), ("far", 2.0)]:
        submit_local(json.dumps(synthetic_bundle(suite, name, accuracy=0.6, seed=0, fps=fps)).encode(), store,
                     submitter="rlir")  # fmt: skip
    svg = re.search(r'<svg class="scatter".*?</svg>', render_html(leaderboards(store)), re.S).group(0)
    points = re.findall(r'cy="([\d.]+)" r="4.5"/><text x="([\d.]+)" y="([\d.]+)">([^<]+)</text></g>', svg)
    labels = {name: (float(x), float(y), float(cy)) for cy, x, y, name in points}  # point's y, label's x and y
    assert labels.keys() == {"crafter-mineworld-rlir", "crafter-mineworld", "far"}
    (x_a, y_a, _), (x_b, y_b, _) = labels["crafter-mineworld-rlir"], labels["crafter-mineworld"]
    assert abs(x_a - x_b) < 6.5 * len("crafter-mineworld")  # they would overlap on one line...
    assert abs(y_a - y_b) >= 13  # ... so they sit on two
    _, y_far, cy_far = labels["far"]
    assert y_far == pytest.approx(cy_far - 6)  # a label with room stays just above its point


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=2000", *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def _dom(site, tmp_path, query: str) -> _Elements:
    page, _ = site
    return _Elements(_chromium(tmp_path, "--dump-dom", page.as_uri() + query).stdout)


@needs_chromium
def test_browser_runs_the_script_sorts_and_expands(site, tmp_path):
    _, [board] = site
    dom = _dom(site, tmp_path, "?sort=model&dir=asc&expand=all")
    body = next(attrs for tag, attrs in dom.elements if tag == "body")
    assert body["data-ready"] == "1"  # the script ran under the page's CSP
    table = next(attrs for tag, attrs in dom.elements if tag == "table" and "board" in attrs.get("class", ""))
    assert (table["data-sort-key"], table["data-sort-dir"]) == ("model", "asc")
    rows = [
        a for tag, a in dom.elements if tag == "tr" and (a.get("class", "").split() or [""])[0] in ("entry", "detail")
    ]
    entries = [r for r in rows if "entry" in r["class"]]
    by_id = {r.submission_id: r.model for r in board.rows}
    order = [by_id[int(r["data-submission"])] for r in entries]
    assert order == sorted(by_id.values(), key=str.lower)  # JavaScript's comparison of lower-cased names
    assert order != [r.model for r in board.rows]  # not the order the page was served in
    # each detail row follows its entry and is open
    for entry, detail in zip(rows[::2], rows[1::2], strict=True):
        assert detail["id"] == entry["data-detail"] and "hidden" not in detail
    # the hostile names stayed text: no element they describe exists, the only script is the page's own
    tags = [tag for tag, _ in dom.elements]
    assert tags.count("script") == 1 and "img" not in tags and tags.count("h1") == 1
    assert not any(attrs.get("id") == "pwned" or any(k.startswith("on") for k in attrs) for _, attrs in dom.elements)
    visible = "".join(dom.text)
    assert all(name in visible for name in HOSTILE)


@needs_chromium
def test_browser_sorts_numeric_columns(site, tmp_path):
    _, [board] = site
    dom = _dom(site, tmp_path, "?sort=fps&dir=desc")
    order = [int(r["data-submission"]) for r in _entries(dom.elements)]
    with_fps = sorted((r for r in board.rows if r.fps is not None), key=lambda r: -r.fps)
    without = [r.submission_id for r in board.rows if r.fps is None]  # rows without a value sort last, in page order
    assert order == [r.submission_id for r in with_fps] + without != [r.submission_id for r in board.rows]


@needs_chromium
def test_screenshot_is_a_non_blank_png(site, tmp_path):
    import cv2

    page, _ = site
    shot = tmp_path / "page.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1200, 900)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (900, 1200, 3)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert image.std() > 5 and len(colours) > 50  # text, badges and table rules, not a blank page
