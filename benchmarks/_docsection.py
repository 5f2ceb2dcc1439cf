"""Shared by the benchmark scripts: replace one '## ' section of a markdown file, keep the rest."""

import re
from pathlib import Path


def write_section(doc: Path, heading: str, section: str) -> None:
    """Replace (or append) the section starting with `## heading`, atomically."""
    doc = Path(doc)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    pat = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pat.sub(lambda _: section + "\n", text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
    tmp = doc.with_name(f".{doc.name}.tmp")
    tmp.write_text(text.rstrip("\n") + "\n")
    tmp.replace(doc)
