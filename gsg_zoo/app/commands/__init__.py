"""One module per ``gsg`` command; see :mod:`gsg_zoo.app.cli` for the contract."""
