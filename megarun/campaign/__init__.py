"""Jobs and apps: create, query, control, logs."""
