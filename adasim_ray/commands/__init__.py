"""Sub-commands of ``launch.py`` that live in their own modules (see ``cli.COMMAND_MODULES``).

Each module has ``register(subparsers)``, which adds its parser and sets ``func``.
"""
