"""Operator extra links to the dCache frontend."""
