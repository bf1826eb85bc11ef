"""`python -m metapinn._cli ARGS`: the `metapinn` command."""

import sys

from . import main


sys.exit(main())
