"""``python -m ayudantia``: the same CLI as the ``ayudantia`` command."""

from ayudantia.entry import main

raise SystemExit(main())
