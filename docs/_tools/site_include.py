"""Build-time includes, so that the short per-stage pages show the existing documentation rather
than a copy of it. Two one-line directives (HTML comments, invisible where Markdown is read raw):

    <!-- include: ../guide.md#export-and-the-integer-artifact -->
        the section of that page under the heading with that anchor, down to the next heading of
        the same or a higher level (for a page's title, level 1: its introduction, down to the
        first heading, without the title itself); its relative links are rewritten for the
        including page, and a line naming the source follows it. The path may leave the docs
        directory (`../README.md`);
    <!-- cli: export -->
        the help of `qornn export` (as on the generated CLI page).
"""

from __future__ import annotations

import posixpath
import re

from markdown.extensions.toc import slugify

INCLUDE = re.compile(r"^<!-- include: (?P<path>[^#\s]+)#(?P<anchor>\S+) -->$", re.M)
CLI = re.compile(r"^<!-- cli: (?P<command>[\w-]+) -->$", re.M)
HEADING = re.compile(r"^(#{1,6}) +(.+?)\s*#*\s*$")
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
FENCE = re.compile(r"^(```|~~~)")


class IncludeError(Exception):
    pass


def anchor_of(heading: str) -> str:
    """The id Python-Markdown's toc extension gives a heading (inline code and emphasis marks dropped)."""
    return slugify(re.sub(r"[`*_]", "", heading), "-")


def section(text: str, anchor: str) -> str | None:
    """The lines of the section whose heading has this anchor (heading included), or None. A
    level-1 heading (a page title) gives the introduction below it, without the title."""
    lines, start, level, fenced = text.splitlines(), None, 0, False
    end = len(lines)
    for i, line in enumerate(lines):
        if FENCE.match(line):
            fenced = not fenced
        m = None if fenced else HEADING.match(line)
        if not m:
            continue
        if start is None and anchor_of(m.group(2)) == anchor:
            start, level = i, len(m.group(1))
        elif start is not None and (len(m.group(1)) <= level or level == 1):
            end = i
            break
    if start is None:
        return None
    return "\n".join(lines[start + (level == 1):end]).strip("\n") + "\n"


def rebase_links(text: str, source: str, page: str, docs_name: str = "docs") -> str:
    """Rewrite the relative links of `text`, written for `source`, for docs page `page` (both paths
    relative to the docs directory, whose own name is `docs_name`)."""

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return m.group(0)
        path, _, frag = target.partition("#")
        path = path or posixpath.basename(source)
        target = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        if target.startswith(f"../{docs_name}/"):  # a file outside the docs linking back into them
            target = target[len(docs_name) + 4:]
        new = posixpath.relpath(target, posixpath.dirname(page) or ".")
        return m.group(1) + new + ("#" + frag if frag else "") + m.group(3)

    return LINK.sub(fix, text)


def expand(markdown: str, page: str, read, cli_block, docs_name: str = "docs") -> str:
    """Expand the directives of docs page `page` (a path relative to the docs directory);
    `read(path)` returns the source of another file (relative to the docs directory),
    `cli_block(command)` a help block."""

    def include(m: re.Match) -> str:
        source = posixpath.normpath(posixpath.join(posixpath.dirname(page), m.group("path")))
        try:
            text = read(source)
        except OSError:
            raise IncludeError(f"{page}: include of {source}, which does not exist") from None
        body = section(text, m.group("anchor"))
        if body is None:
            raise IncludeError(f"{page}: {source} has no heading with the anchor #{m.group('anchor')}")
        name = posixpath.basename(source)
        if source.startswith("../"):  # outside the site: named, not linked
            origin = f"the repository's `{name}`"
        else:
            origin = f"[{name}]({posixpath.relpath(source, posixpath.dirname(page) or '.')}#{m.group('anchor')})"
        return rebase_links(body, source, page, docs_name) + f"\n<small>From {origin}.</small>\n"

    def cli(m: re.Match) -> str:
        try:
            return cli_block(m.group("command"))
        except KeyError:
            raise IncludeError(f"{page}: no command `qornn {m.group('command')}`") from None

    return CLI.sub(cli, INCLUDE.sub(include, markdown))
