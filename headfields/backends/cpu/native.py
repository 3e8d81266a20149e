"""Native code in ``.cpp`` files of this folder, read as the text that ``wp.func_native`` takes.

Warp compiles a native snippet into the module that calls it, with its own CPU compiler (clang) at first use: no
compiler or build step at install time, and Warp's kernel cache keys on the snippet's text, so an edited file is
rebuilt. A snippet is a function's body, not a translation unit, so a file holds named pieces: the text after each
``// @section NAME`` line up to the next is the piece NAME; what comes before the first is the file's own comment.
Names in capitals (``STACK_SIZE``, ``NODE_TEST``) are placeholders its Python module fills in.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["SECTION", "native_sections"]

SECTION = "// @section "  # a line that starts a piece: the marker, then its name


@cache
def native_sections(name: str) -> dict[str, str]:
    """The pieces of ``name``, a ``.cpp`` file of this folder (shipped with the package), by their names: each piece's
    lines, every one ending in a newline.

    ```python
    walk = native_sections("wide_bvh_walk.cpp")["walk"]
    ```
    """
    text = resources.files(__package__).joinpath(name).read_text()
    pieces: dict[str, list[str]] = {}
    lines: list[str] | None = None  # the current piece's; None before the first marker (the file's comment)
    for line in text.splitlines(keepends=True):
        if line.startswith(SECTION):
            piece = line[len(SECTION) :].strip()
            if not piece or piece in pieces:
                raise ValueError(f"{name}: expected a new piece's name after {SECTION!r}, got {line.strip()!r}")
            lines = pieces[piece] = []
        elif lines is not None:
            lines.append(line if line.endswith("\n") else line + "\n")
    if not pieces:
        raise ValueError(f"{name}: expected pieces marked {SECTION!r}NAME, found none")
    return {piece: "".join(lines) for piece, lines in pieces.items()}
