"""The report as a reader sees it: laid out by headless Chromium at 1280 px, measured in the page.

A measuring script is added to a copy of the report (the report itself has none); it writes what it
measured into the DOM, which ``--dump-dom`` returns. Skipped where there is no Chromium.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.html import render_report
from tests.test_report import summary, workdir  # noqa: F401 - the tiny real summary the other report tests use

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary")
SCREEN = (1280, 800)  # one screen at 1280 px wide
MAX_SCREENS = 12

MEASURE = """<script>
(() => {
  const open = %s;
  if (open) document.querySelectorAll('details').forEach(d => d.open = true);
  const box = e => e.getBoundingClientRect();
  const out = {
    height: document.documentElement.scrollHeight,
    first: (() => { const m = document.querySelector('main'); const e = m && m.firstElementChild;
                    return e ? {id: e.id, cls: e.className, top: box(e).top} : null; })(),
    dl: [...document.querySelectorAll('dl dd')].filter(d => d.offsetParent !== null)
          .map(d => ({label: d.previousElementSibling ? d.previousElementSibling.textContent.trim() : '',
                      width: box(d).width, dt_width: d.previousElementSibling ? box(d.previousElementSibling).width : 0,
                      section: (d.closest('section') || {}).id || ''})),
    sections: [...document.querySelectorAll('main > section')].map(s => ({id: s.id, top: box(s).top + scrollY,
          height: box(s).height, open: !!(s.querySelector(':scope > details') || {}).open,
          summary: ((s.querySelector(':scope > details > summary') || {}).textContent || '').trim()})),
  };
  const pre = document.createElement('pre'); pre.id = 'measured'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def measure(html: str, tmp_path: Path, open_all: bool = False) -> dict:
    page = tmp_path / ("open.html" if open_all else "closed.html")
    page.write_text(html.replace("</body>", MEASURE % ("true" if open_all else "false") + "</body>"), encoding="utf-8")
    flags = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / ('p-open' if open_all else 'p-closed')}",
        f"--window-size={SCREEN[0]},{SCREEN[1]}",
        "--virtual-time-budget=3000", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    r = subprocess.run(flags, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="measured">(.*?)</pre>', r.stdout, re.S)
    assert m, r.stderr[-2000:]
    return json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


@pytest.fixture(scope="module")
def html(summary):  # noqa: F811
    return render_report(summary)


@pytest.fixture(scope="module")
def closed(html, tmp_path_factory):
    return measure(html, tmp_path_factory.mktemp("closed"))


@pytest.fixture(scope="module")
def opened(html, tmp_path_factory):
    return measure(html, tmp_path_factory.mktemp("open"), open_all=True)


RAW_KEY = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")  # intervals_s, variants_s: a summary key, not a label


def test_definition_lists_are_not_squeezed_and_have_no_raw_keys(opened):
    """Issue 21.1: every definition-list value is at least 200 px wide at 1280 px (a long label once squeezed the
    Metadata values to one character per line), and no label is a raw summary key."""
    dl = opened["dl"]
    assert len(dl) >= 10 and any(d["section"] == "metadata" for d in dl)
    narrow = [(d["label"], round(d["width"])) for d in dl if d["width"] < 200]
    assert not narrow, narrow
    raw = [d["label"] for d in dl if RAW_KEY.match(d["label"]) and d["section"] != "environment"]
    assert not raw, raw


def test_the_verdict_comes_first(closed, html):
    """The verdict box is the first thing in the page's main column, open, above the fold."""
    assert closed["first"]["id"] == "verdict", closed["first"]
    assert closed["first"]["top"] < SCREEN[1] / 2
    assert html.index('id="verdict"') < html.index('id="firing"')


def test_sections_are_closed_with_a_one_line_summary(closed):
    """Everything below the verdict opens on demand; each closed section says in one line what is inside."""
    secs = [s for s in closed["sections"] if s["id"] != "verdict"]
    assert len(secs) >= 10
    for s in secs:
        assert not s["open"], s["id"]
        assert len(s["summary"]) > 20 and "\n\n" not in s["summary"], s


def test_default_view_is_at_most_twelve_screens(closed, opened):
    """Issue 21: at most about 12 screens at 1280 px with the sections closed (the page was 39 screens)."""
    screens = closed["height"] / SCREEN[1]
    assert screens <= MAX_SCREENS, screens
    assert opened["height"] > closed["height"] * 2  # the rest is still there, on demand
