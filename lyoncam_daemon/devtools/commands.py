"""The `simulate` command: serve simulated CriTer cameras on loopback."""

from __future__ import annotations

from lyoncam_daemon.arguments import Command
from lyoncam_daemon.devtools import simulator

COMMANDS = (
    Command("simulate", "serve simulated CriTer cameras on loopback",
            simulator.__doc__ or "", simulator.add_arguments, simulator.main),
)
