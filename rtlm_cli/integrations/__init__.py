"""rtlm's decisions inside other serving frameworks (optional extras; each imports its framework only
in its own package)."""
