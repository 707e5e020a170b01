"""steinebm.errors.first_line: how every one-line error message quotes the exception it caught."""

from __future__ import annotations

import pytest

from steinebm.errors import DataError, first_line


@pytest.mark.parametrize(
    "error, expected",
    [
        (ValueError("bad value"), "bad value"),
        (ValueError(""), "ValueError"),  # an empty message: the type's name
        (KeyError(), "KeyError"),
        (OSError(" \n\t\n"), "OSError"),  # blank lines only: as empty
        (RuntimeError("Error(s) in loading state_dict:\n\tMissing key(s): 'w'"), "Error(s) in loading state_dict:"),
        (ValueError("\n\n  while parsing a mapping  \n  in <unicode string>"), "while parsing a mapping"),
        (DataError("first\r\nsecond"), "first"),
        (KeyError("w"), "'w'"),  # as str() shows it
    ],
)
def test_first_line(error, expected):
    assert first_line(error) == expected


def test_first_line_is_one_line_for_any_message():
    for text in ["a\x0bb", "a\u2028b", "\x1c\x1da", "line\rnext", "x" * 500]:
        line = first_line(ValueError(text))
        assert line and line == line.strip() and len(line.splitlines()) == 1
