"""MkDocs hooks of the keras-dreamer site (listed under `hooks:` in mkdocs.yml).

The benchmarks page includes `benchmarks/RESULTS.md` where its marker
`<!-- benchmark-results -->` stands, so no number is copied by hand. Its
headings move one level down to nest under the page's title, and links to
files next to it (scripts, notes), which are not part of the site, become
plain text with the file's path. A missing RESULTS.md is a warning, so
`mkdocs build --strict` fails.
"""

import logging
import os
import re

MARKER = "<!-- benchmark-results -->"
LOG = logging.getLogger("mkdocs.hooks.benchmarks")
LINK = re.compile(r"\[([^\]]+)\]\((?![a-z]+://|#|mailto:)([^)\s]+)\)")


def nest(text, source):
    """`text` with headings one level deeper and local links made plain."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,5} ", line):
            line = "#" + line
        elif not fenced:
            line = LINK.sub(
                lambda m: f"{m.group(1)} (`{_near(source, m.group(2))}`)", line
            )
        lines.append(line)
    return "\n".join(lines)


def _near(source, target):
    folder = os.path.basename(os.path.dirname(source))
    return os.path.normpath(os.path.join(folder, target))


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    root = os.path.dirname(os.path.abspath(config.config_file_path))
    path = os.path.join(root, "benchmarks", "RESULTS.md")
    if not os.path.isfile(path):
        LOG.warning(f"{page.file.src_uri}: no benchmarks/RESULTS.md to include")
        return markdown
    with open(path) as file:
        return markdown.replace(MARKER, nest(file.read(), path))
