"""``python -m bench.loadgen``: see bench/loadgen/_cli.py."""

import sys

from bench.loadgen._cli import main

sys.exit(main())
