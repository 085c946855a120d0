"""Regression test suites: targets, test definitions (tests/<name>/test.toml) and their expansion into jobs.

- `targets`: parsing `--target` values against the area's keys, `%` patterns, per-target variables.
- `definition`: loading and validating test.toml files into frozen TestDef values.
- `expand`: selecting tests by pattern, closing over `waiton`, and expanding items into a job graph.
- `run_prepare`: a run's jobs created or refreshed from the definitions; `run_report`: items,
  roll-ups and the list of runs; `run_control`: rerun, clean, kill; `run_state`, `stale`.

Suites use the campaign (jobs) and are used by the archive, never the reverse.
"""
