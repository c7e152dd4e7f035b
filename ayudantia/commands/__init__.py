"""Subcommands: each module has NAME, HELP, options(), add_arguments() and main()."""

from ayudantia.commands import (
    certs,
    docencio,
    eco,
    estudiante,
    lesson,
    profesor,
    proxy,
    quijote,
    run,
    tareo,
    wireshark,
)

COMMANDS = (
    run,
    profesor,
    tareo,
    docencio,
    estudiante,
    eco,
    quijote,
    lesson,
    proxy,
    certs,
    wireshark,
)
