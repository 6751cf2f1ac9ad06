"""The command line: one Typer module per command group. Parse, call the core, print."""
