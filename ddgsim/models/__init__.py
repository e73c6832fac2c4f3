"""Model zoo (plain torch) and the registry of names the CLI accepts."""
