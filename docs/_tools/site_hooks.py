"""MkDocs hooks of the qornn site (mkdocs.yml `hooks:`): the generated reference pages and the
build-time includes. The logic lives in site_reference.py and site_include.py beside this file."""

from __future__ import annotations

import shutil
from pathlib import Path

import site_include as include
import site_reference as reference
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

GENERATED = {"reference/cli.md": reference.cli_page, "reference/api.md": reference.api_page}
_mirror: Path | None = None


@event_priority(100)  # before mkdocstrings reads its handler options
def on_config(config):
    """Point mkdocstrings at a mirror of the package as Python imports it (reference.source_mirror)."""
    global _mirror
    on_shutdown()  # `mkdocs serve` calls on_config again on every rebuild
    _mirror = reference.source_mirror([module for _, module, _ in reference.api_sections()])
    python = config.plugins["mkdocstrings"].config.handlers.setdefault("python", {})
    python["paths"] = [str(_mirror)] + list(python.get("paths") or [])
    return config


def on_files(files, config):
    for path, make in GENERATED.items():
        if files.get_file_from_path(path) is not None:
            raise PluginError(f"docs/{path} is generated when the site is built; remove the hand-written file")
        files.append(File.generated(config, path, content=make()))
    return files


def on_page_markdown(markdown, page, config, files):
    def read(path: str) -> str:
        return (Path(config.docs_dir) / path).read_text(encoding="utf-8")

    try:
        return include.expand(markdown, page.file.src_uri, read, reference.help_block,
                              Path(config.docs_dir).name)
    except include.IncludeError as e:
        raise PluginError(str(e)) from None


def on_shutdown():
    global _mirror
    if _mirror is not None:
        shutil.rmtree(_mirror, ignore_errors=True)
        _mirror = None
