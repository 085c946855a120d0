"""Tables for notebooks: records as pandas DataFrames, only when pandas is installed.

pandas is no dependency of megarun (it is large, and the CLI never needs it): it is imported
only when a frame is asked for, and its absence is an ImportError saying how to install it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PANDAS_MISSING = ("this needs pandas, which megarun does not install: pip install pandas")


def pandas_module() -> Any:
    """The pandas module; ImportError naming `pip install pandas` when it is not installed."""
    try:
        return importlib.import_module("pandas")
    except ImportError as exc:
        raise ImportError(PANDAS_MISSING) from exc


def frame(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Any:
    """A DataFrame of `rows` with these columns (in this order, also when there is no row)."""
    pandas = pandas_module()
    return pandas.DataFrame.from_records(list(rows), columns=list(columns))
