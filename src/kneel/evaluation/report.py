"""A small self-contained HTML report builder: headings, text, tables and embedded pictures in one file.

Pictures are embedded as base64 PNG, so ``report.html`` can be mailed or archived alone. Used by ``kneel evaluate``
and by the demo, which adds its own sections (training summary, exact vs reference geometry).
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import pandas as pd

from kneel.io.atomic import atomic_write_text

__all__ = ["HtmlReport"]

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
"""


class HtmlReport:
    """Accumulates report blocks in order; :meth:`write` renders them into one HTML file."""

    def __init__(self, title: str) -> None:
        self.title = title
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
        markup = display.to_html(index=False, escape=True, border=0, na_rep="n/a")
        if caption:
            markup = f"<figure>{markup}<figcaption>{html.escape(caption)}</figcaption></figure>"
        self._blocks.append(markup)
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
            f"<body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        atomic_write_text(path, self.render())
        return path
