"""The Python API: `megarun.open_area()` and the typed records it returns (docs/python-api.md).

The CLI's `job` commands, `status` and `runs ls` read and write through this layer too, so the
two never differ. Import it as `import megarun`: the names load on first use.
"""
