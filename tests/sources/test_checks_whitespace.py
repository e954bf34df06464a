"""The whitespace set of the sources checks is written out (no scan of every code point at
import); it must stay exactly what Python's str.isspace()/strip() treat as whitespace."""

from specforge_assets.checks import sources


def test_whitespace_literal_is_pythons_whitespace():
    assert sources._WS == "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
