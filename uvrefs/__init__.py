"""uvrefs: keep exactly what some living environment uses in uv's cache, free the rest.

Tracked installs record per-entry references outside the cache; `collect` frees entries
whose referencing environments are gone or no longer use them.
"""

__version__ = "0.1.0"
