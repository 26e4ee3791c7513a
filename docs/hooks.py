"""MkDocs hooks of the keras-dreamer site (listed under `hooks:` in mkdocs.yml).

The benchmarks page includes the measured results where its marker
`<!-- benchmark-results -->` stands, so no number is copied by hand:
`benchmarks/RESULTS.md`, or, where that file does not exist, the per-area
files `benchmarks/results_*.md`. Their headings move one level down to nest
under the page's title, and links to files next to them (scripts, notes),
which are not part of the site, become plain text with the file's path.
Finding no result file is a warning, so `mkdocs build --strict` fails.
"""

import glob
import logging
import os
import re

MARKER = "<!-- benchmark-results -->"
LOG = logging.getLogger("mkdocs.hooks.benchmarks")
LINK = re.compile(r"\[([^\]]+)\]\((?![a-z]+://|#|mailto:)([^)\s]+)\)")


def result_files(root):
    """The benchmark result files to include, in order."""
    main = os.path.join(root, "benchmarks", "RESULTS.md")
    if os.path.isfile(main):
        return [main]
    return sorted(glob.glob(os.path.join(root, "benchmarks", "results_*.md")))


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
    paths = result_files(root)
    if not paths:
        LOG.warning(f"{page.file.src_uri}: no benchmarks/RESULTS.md to include")
        return markdown
    parts = []
    for path in paths:
        with open(path) as file:
            parts.append(nest(file.read(), path))
    return markdown.replace(MARKER, "\n\n".join(parts))
