"""`python -m modgate` is the `modgate` command."""

import sys

from modgate.cli import main

sys.exit(main())
