"""`python -m lyoncam_daemon`: the same CLI as the `lyoncam` script."""

import sys

if sys.argv[1:2] == ["run"]:
    # First of all: a SIGHUP while the libraries load must not end the daemon (hangup.py).
    from lyoncam_daemon.capture import hangup

    hangup.hold()

try:
    from lyoncam_daemon.cli import main
except KeyboardInterrupt:  # Ctrl-C while the libraries are still loading
    sys.exit(130)

sys.exit(main())
