"""vidclip.cli: the ``vidclip`` command line. ``main.py`` registers every verb and runs one (the
entry point is :func:`vidclip.cli.main.main`); ``options.py`` holds the options several verbs share;
``demo.py`` is ``vidclip demo``. The other verbs live beside their code (``<area>/commands.py``).

Nothing is imported here: a verb module that imports :mod:`vidclip.cli.options` must not pull in
every other verb (and through them the training package). ``from vidclip.cli import main`` (the
console script of installs made before ``cli`` became a package) gets the module
:mod:`vidclip.cli.main`, which is callable as its ``main`` function.
"""
