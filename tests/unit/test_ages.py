import pytest

from megarun.core.ages import format_age, parse_age
from megarun.errors import UsageError


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400),
                                              ("45s", 45), ("2w", 14 * 86400), ("1.5", 129600),
                                              (" 7D ", 7 * 86400)])
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-3d", "3y", "3 days", "1;rm"])
def test_bad_age_is_one_line_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="expected an age"):
        parse_age(text)


def test_format_age() -> None:
    assert [format_age(s) for s in (3, 600, 36000, 40 * 86400)] == ["3 s", "10 min", "10.0 h",
                                                                      "40 d"]
