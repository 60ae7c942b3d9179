"""MkDocs hook: references into the documentation from outside it must resolve, like links inside it.

MkDocs validates links between pages of ``docs/``. Two kinds of reference live outside ``docs/`` and would
otherwise rot unseen:

- the README's relative links (``docs/cli.md#...``, ``LICENSE``): the file must exist and, for a page of
  the site, the anchor must be one of the page's ids;
- ``docs/<page>.md#<anchor>`` written in the code (docstrings, comments, ``Resources/Presets/*.json``):
  the page must be built and the anchor must exist on it.

Each miss is logged as a warning of the ``mkdocs`` logger, so ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.check_references")

_IDS = re.compile(r'\sid="([^"]+)"')
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE_REFERENCE = re.compile(r"docs/([\w./-]+\.md)(?:#([\w-]+))?")
_CODE_FOLDERS = ("ZeroShotDiffusionSeg", "benchmarks")
_CODE_SUFFIXES = (".py", ".json", ".sh", ".md", ".txt")

_page_ids: dict = {}


def on_page_content(html, page, config, files):
    _page_ids[page.file.src_uri] = set(_IDS.findall(html))
    return html


def _check(where: str, page: str, anchor: str) -> None:
    if page not in _page_ids:
        log.warning("%s: docs/%s is not a page of the documentation", where, page)
    elif anchor and anchor not in _page_ids[page]:
        log.warning("%s: docs/%s has no anchor #%s", where, page, anchor)


def _check_readme(root: Path) -> None:
    text = (root / "README.md").read_text(encoding="utf-8")
    # An HTML comment is not rendered, so a link in it is not a link (its newlines are kept for the line numbers).
    text = _COMMENT.sub(lambda comment: "\n" * comment.group(0).count("\n"), text)
    for number, line in enumerate(text.splitlines(), start=1):
        for target in _MARKDOWN_LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL (https:, mailto:) or an anchor of the README itself
            path, _, anchor = target.partition("#")
            where = f"README.md:{number}"
            if path.startswith("docs/") and path.endswith(".md"):
                _check(where, path[len("docs/"):], anchor)
            elif not (root / path).exists():
                log.warning("%s: link to %s, which does not exist", where, path)


def _check_code(root: Path) -> None:
    for folder in _CODE_FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in _CODE_SUFFIXES or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), start=1):
                for page, anchor in _CODE_REFERENCE.findall(line):
                    _check(f"{path.relative_to(root)}:{number}", page, anchor)


def on_post_build(config):
    root = Path(config.config_file_path).resolve().parent
    _check_readme(root)
    _check_code(root)
