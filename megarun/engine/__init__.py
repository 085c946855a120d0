"""The per-site cycle: what `launch` runs in a loop and `sync` runs once."""
