"""Allows `python -m uvrefs`."""

from uvrefs.launch import main

main()
