"""One concern a module: none in headfields/ is over 500 lines unless its docstring says why it is one file."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "headfields"
LIMIT = 500


def test_no_module_is_over_500_lines_without_saying_why():
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > LIMIT:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if f"over {LIMIT} lines because" not in doc:
                unexplained.append(f"{path.relative_to(PACKAGE.parent)} ({text.count(chr(10))} lines)")
    assert not unexplained, f"over {LIMIT} lines, no reason in the docstring: {unexplained}"
