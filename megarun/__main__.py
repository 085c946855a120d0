"""`python -m megarun`: the same as the `megarun` command."""

import sys

from megarun.cli.entry import main

sys.exit(main())
