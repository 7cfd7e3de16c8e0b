"""A small self-contained HTML report builder: headings, text, tables and embedded pictures in one file.

Pictures are embedded as base64 PNG, so ``report.html`` can be mailed or archived alone. Used by ``kneel evaluate``
and by the demo, which adds its own sections (training summary, exact vs reference geometry). Every report carries a
stamp (:func:`run_stamp`: kneel version, git commit of a source checkout, torch version, device, date) under its
title, so a figure can always be traced to the code that made it.
"""

from __future__ import annotations

import base64
import datetime
import html
import importlib.metadata
import os
import subprocess
from pathlib import Path

import pandas as pd

from kneel.io.atomic import atomic_write_text

__all__ = ["HtmlReport", "run_stamp", "git_commit", "default_device"]

_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .1em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; }
figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: .4em .8em; }
.ok { background: #eaf7ea; border-left: 4px solid #3a3; padding: .4em .8em; }
code, pre { background: #f6f6f6; padding: 0 .2em; }
.stamp { font-size: 0.82em; color: #666; margin-top: -.6em; }
td.folded { text-align: center; color: #777; font-style: italic; }
details { margin: .6em 0; }
summary { cursor: pointer; color: #335; }
"""


def git_commit(source: str | os.PathLike[str] | None = None) -> str | None:
    """Short commit of the git checkout that ``source`` (default: kneel's package folder) is tracked in, with
    ``+changes`` when its files differ from that commit; None when it is not a checkout (an installed wheel) or git
    is unavailable.

    The package file must be tracked by the repository: a wheel installed in a virtual environment that happens to
    sit inside some other checkout gets None, not that checkout's commit.
    """
    folder = Path(source) if source is not None else Path(__file__).resolve().parents[1]
    if not folder.is_dir():
        return None

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=False)

    try:
        if git("ls-files", "--error-unmatch", "--", ".").returncode != 0:
            return None
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = git("diff", "--quiet", "HEAD", "--", ".").returncode == 1
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty else "")


def default_device() -> str:
    """The device torch would use here: ``cuda:0 (<name>)`` when CUDA is available, else ``cpu``."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return f"cuda:0 ({torch.cuda.get_device_name(0)})"
    return "cpu"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_stamp(device: str | None = None, now: datetime.datetime | None = None) -> str:
    """One line naming what made a report: kneel version, git commit (source checkouts only), torch version, device
    (``device``, default :func:`default_device`) and local date and time with its UTC offset."""
    from kneel import __version__

    parts = [f"kneel {__version__}"]
    commit = git_commit()
    if commit:
        parts.append(f"git {commit}")
    parts.append(f"torch {_version('torch')}")
    parts.append(f"device {device or default_device()}")
    stamp_time = (now or datetime.datetime.now()).astimezone()
    parts.append(stamp_time.strftime("%Y-%m-%d %H:%M %Z").strip())
    return " · ".join(parts)


class HtmlReport:
    """Accumulates report blocks in order; :meth:`write` renders them into one HTML file."""

    def __init__(self, title: str, stamp: str | None = None, device: str | None = None) -> None:
        """``stamp`` defaults to :func:`run_stamp` with ``device``."""
        self.title = title
        self.stamp = stamp if stamp is not None else run_stamp(device)
        self._blocks: list[str] = []

    def heading(self, text: str, level: int = 2) -> HtmlReport:
        self._blocks.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str, css: str = "") -> HtmlReport:
        cls = f' class="{css}"' if css else ""
        self._blocks.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def bullets(self, items: list[str]) -> HtmlReport:
        self._blocks.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
        return self

    def code(self, text: str) -> HtmlReport:
        self._blocks.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def raw(self, markup: str) -> HtmlReport:
        """Insert trusted markup as is."""
        self._blocks.append(markup)
        return self

    def table(self, display: pd.DataFrame, caption: str = "") -> HtmlReport:
        """A table of display cells; ``display.attrs["spans"]`` (row -> (first column, count)) merges a row's cells
        into one (e.g. recall that is 0 at every threshold, said once)."""
        self._blocks.append(_figure(table_html(display), caption))
        return self

    def details(self, summary: str, display: pd.DataFrame, caption: str = "") -> HtmlReport:
        """A table folded under a one-line summary the reader can open."""
        self._blocks.append(
            f"<details><summary>{html.escape(summary)}</summary>{_figure(table_html(display), caption)}</details>"
        )
        return self

    def image(self, path: str | os.PathLike[str], caption: str = "") -> HtmlReport:
        """Embed a PNG (or SVG) file; a missing file becomes a visible note instead of a broken image."""
        path = Path(path)
        if not path.is_file():
            return self.paragraph(f"(picture not available: {path.name})", css="note")
        mime = "image/svg+xml" if path.suffix.lower() == ".svg" else "image/png"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._blocks.append(
            f'<figure><img alt="{html.escape(path.name)}" src="data:{mime};base64,{data}">{cap}</figure>'
        )
        return self

    def render(self) -> str:
        body = "\n".join(self._blocks)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n"
            f"<body><h1>{html.escape(self.title)}</h1>\n"
            f'<p class="stamp">{html.escape(self.stamp)}</p>\n{body}\n</body></html>\n'
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        atomic_write_text(path, self.render())
        return path


def _figure(markup: str, caption: str) -> str:
    return f"<figure>{markup}<figcaption>{html.escape(caption)}</figcaption></figure>" if caption else markup


def table_html(display: pd.DataFrame) -> str:
    """Escaped HTML of a table of display cells, honouring ``display.attrs["spans"]``."""
    spans: dict[int, tuple[int, int]] = display.attrs.get("spans", {}) or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in display.columns)
    rows = []
    for i, values in enumerate(display.itertuples(index=False)):
        first, count = spans.get(i, (-1, 0))
        cells = []
        for j, value in enumerate(values):
            text = "n/a" if value is None or (isinstance(value, float) and value != value) else str(value)
            if j == first:
                cells.append(f'<td class="folded" colspan="{count}">{html.escape(text)}</td>')
            elif first < j < first + count:
                continue
            else:
                cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
