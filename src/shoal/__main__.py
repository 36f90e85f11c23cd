"""``python -m shoal``: the ``shoal`` command, for launchers that start a module (torchrun -m shoal ...)."""

from shoal.cli import main

main()
