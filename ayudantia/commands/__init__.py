"""Subcommands: each module has NAME, HELP, options(), add_arguments() and main()."""

from ayudantia.commands import (
    certs,
    docencio,
    eco,
    estudiante,
    find,
    lesson,
    notebook,
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
    notebook,
    proxy,
    certs,
    find,
    wireshark,
)
