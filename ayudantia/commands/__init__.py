"""Subcommands. Each module has NAME, HELP, options(), add_arguments(parser), main(settings, args)."""

from ayudantia.commands import eco, quijote, run

COMMANDS = (run, eco, quijote)
