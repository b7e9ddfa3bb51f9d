"""The debug adapter as an editor spawns it: ``python adapter.py`` is ``midrun dap`` (over
stdio), with the midrun of the Python that runs it."""

from midrun.cli.dap import main

raise SystemExit(main())
