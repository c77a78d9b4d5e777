"""Sub-commands of the ``maskdefense`` CLI (one module each, see :mod:`maskdefense.cli`)."""
