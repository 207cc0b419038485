"""vidclip.cli: the ``vidclip`` command line; the entry point is :func:`vidclip.cli.main.main`.

Nothing is imported here: a verb module that imports :mod:`vidclip.cli.options` must not pull in
every other verb (and through them the training package)."""
