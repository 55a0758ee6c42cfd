"""tests/cli: every subcommand, errors as one line, the CLI surface snapshot (cli_surface.json), fuzzed inputs."""
