"""`python -m lyoncam_daemon`: the same CLI as the `lyoncam` script."""

import sys

try:
    from lyoncam_daemon.cli import main
except KeyboardInterrupt:  # Ctrl-C while the libraries are still loading
    sys.exit(130)

sys.exit(main())
