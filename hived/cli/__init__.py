"""The command-line programs: ``hived`` (the daemon) and ``hivectl`` (its remote control)."""
