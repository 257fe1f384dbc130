"""`python -m lyoncam_daemon`: the same CLI as the `lyoncam` script."""

import sys

from lyoncam_daemon.cli import main

sys.exit(main())
