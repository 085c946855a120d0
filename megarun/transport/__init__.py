"""Transports: how commands and files reach a site (local processes, SSH, rsync)."""
