"""Thin command-line entry points, one module per `python -m pipeline <command>`.

A command module parses arguments, calls into the module that does the work, and prints a summary.
Logic does not live here.
"""
