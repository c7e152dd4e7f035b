"""``python -m ayudantia``: the same CLI as the ``ayudantia`` command."""

from ayudantia.cli import main

raise SystemExit(main())
