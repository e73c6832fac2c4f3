"""One module per ``python -m ddgsim`` subcommand."""
