"""Transports: how commands and files reach a site (local processes, SSH, rsync), and the
per-process pool that keeps one open transport per site (pool.py)."""
