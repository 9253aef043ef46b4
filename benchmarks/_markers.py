"""Generated sections of the hand-written benchmark pages: the text between ``<!-- <tag>:begin -->`` and
``<!-- <tag>:end -->`` belongs to a script, everything around it to its authors."""

from __future__ import annotations

from pathlib import Path


def write_between_markers(path: Path, text: str, tag: str) -> None:
    """Replace what lies between ``tag``'s markers in ``path`` (the text around them stays), atomically; a page
    that does not exist yet is created with just the markers."""
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    old = path.read_text() if path.is_file() else f"{begin}\n{end}\n"
    if begin not in old or end not in old:
        raise SystemExit(f"{path} lacks the markers {begin} / {end}")
    head, rest = old.split(begin, 1)
    tail = rest.split(end, 1)[1]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{head}{begin}\n{text}\n{end}{tail}")
    tmp.replace(path)
