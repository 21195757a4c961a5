"""The `winnow` command line: a leaf package (nothing imports it). Entry point: :func:`cli.main.main`."""
