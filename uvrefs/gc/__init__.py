"""Collect, as stages: roots -> mark -> plan (pure) -> sweep (the only code that deletes),
run by `collect`; `runner` runs a collect as a command (lock waits, retries, the log)."""
