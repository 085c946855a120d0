"""Completed runs: the archive, migration between areas and the rules that automate both."""
