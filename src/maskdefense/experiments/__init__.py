"""Reproducible experiments: each is one function (and one ``maskdefense reproduce NAME`` command)
writing a results folder with a markdown table, a machine-readable file, plots and provenance."""
