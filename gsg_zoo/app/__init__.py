"""The applications: the ``gsg`` command line, the demo, experiments and the zoo build."""
