"""The ``ensemble-kit`` command line."""
