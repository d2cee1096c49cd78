"""`python -m jobfleet`: the command line, where its console script is not on the PATH."""

import sys

from jobfleet.cli import main

sys.exit(main())
