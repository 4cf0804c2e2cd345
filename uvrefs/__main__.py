"""Allows `python -m uvrefs`."""

from uvrefs.launch import console

console()
