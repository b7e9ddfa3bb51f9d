"""The ``midrun`` command line."""
