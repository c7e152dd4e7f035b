"""Subcommands: each module has NAME, HELP, options(), add_arguments() and main()."""

from ayudantia.commands import eco, quijote, run

COMMANDS = (run, eco, quijote)
