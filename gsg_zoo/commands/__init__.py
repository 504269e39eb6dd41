"""One module per ``gsg`` command; see :mod:`gsg_zoo.cli` for the contract."""
