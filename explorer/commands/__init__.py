"""Sub-commands of ``pqx``, one module each (see :mod:`explorer.cli`)."""
