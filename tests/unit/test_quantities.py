"""The one duration grammar and the one size grammar (megarun.core.quantities)."""

import pytest

from megarun.core.quantities import (
    DAY,
    MAX_AGE,
    MEBIBYTE,
    MINUTE,
    format_age,
    format_size,
    parse_duration,
    parse_size,
)
from megarun.errors import ConfigError, UsageError


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 2 * 86400), ("1h30", 5400),
    ("2m30", 150), ("1d12", 86400 + 12 * 3600), ("1.5h", 5400), ("1h 30m", 5400),
    (" 7D ", 7 * 86400), ("2w", 14 * 86400), ("30 d", 30 * 86400), ("0", 0), (".5m", 30),
])
def test_duration_forms(text: str, seconds: float) -> None:
    assert parse_duration(text, "--x") == seconds


@pytest.mark.parametrize(("value", "bare", "seconds"), [
    ("90", 1.0, 90), (90, 1.0, 90), ("30", MINUTE, 1800), (2.5, MINUTE, 150), ("1.5", DAY, 129600),
    ("1h", MINUTE, 3600), ("1h", DAY, 3600),
])
def test_bare_number_keeps_each_options_unit(value: str | float, bare: float, seconds: float) -> None:
    assert parse_duration(value, "--x", bare) == seconds


@pytest.mark.parametrize("text", ["", "d", "-3d", "3y", "3 days", "1;rm", "30m1h", "1h1h", "5s3",
                                  "1h30 2", "nan", "inf", "400d", "1e3"])
def test_bad_duration_is_one_line_error_naming_the_option(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--walltime .*: expected a duration such as 90s, 10m, "
                                         r"1h30m or 2d \(at most a year; a bare number is minutes\)$"):
        parse_duration(text, "--walltime", MINUTE)


def test_duration_error_class_for_config_files() -> None:
    with pytest.raises(ConfigError, match=r"test\.toml: key 'runtimelim' 'soon'"):
        parse_duration("soon", "test.toml: key 'runtimelim'", error=ConfigError)
    with pytest.raises(ConfigError):
        parse_duration(True, "key", error=ConfigError)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "size"), [
    ("512M", 512 << 20), ("10G", 10 << 30), ("1.5TiB", int(1.5 * (1 << 40))), ("20GB", 20 << 30),
    ("100k", 100 << 10), ("7B", 7), ("64 KiB", 64 << 10), ("3", 3),
])
def test_size_forms(text: str, size: int) -> None:
    assert parse_size(text, "--x") == size


def test_bare_size_keeps_its_unit() -> None:
    assert parse_size("20", "minspace", MEBIBYTE) == 20 << 20
    assert parse_size(1.5, "minspace", MEBIBYTE) == int(1.5 * (1 << 20))


@pytest.mark.parametrize("text", ["", "G", "-1G", "10X", "1.5 T B", "1e9", "nan"])
def test_bad_size_is_one_line_error(text: str) -> None:
    with pytest.raises(UsageError, match=r"^limits.minspace .*: expected a size such as 512M, 10G "
                                         r"or 1.5TiB"):
        parse_size(text, "limits.minspace", MEBIBYTE)


def test_format_age_and_size() -> None:
    assert [format_age(s) for s in (3, 600, 36000, 40 * 86400)] == ["3 s", "10 min", "10.0 h",
                                                                      "40 d"]
    assert [format_size(s) for s in (512, 1536, 20 << 30)] == ["512 B", "1.5 KiB", "20.0 GiB"]


def test_an_age_may_be_longer_than_a_year_but_not_a_wait() -> None:
    """--older-than and the archive rules count ages (`1000d` kept runs for years before the
    one grammar); a walltime or an interval stays within a year."""
    assert parse_duration("1000d", "--older-than", DAY, longest=MAX_AGE) == 1000 * DAY
    with pytest.raises(UsageError, match="at most a year"):
        parse_duration("1000d", "--walltime", MINUTE)
    with pytest.raises(UsageError, match="at most a century"):
        parse_duration("40000d", "--older-than", DAY, longest=MAX_AGE)
