"""Each paper's numbers, attack suites and presets, as data: one module per paper.

These modules are plugins (entry-point group ``maskdefense.plugins`` in ``pyproject.toml``): they register
their suites and presets when a registry is first looked up. Nothing below this floor names a paper.
"""
