"""`python -m router` is `turnout`."""

import sys

from router.cli import main

sys.exit(main())
