"""Sites: the registry, reaching them, their spools and the agent shipped to them."""
