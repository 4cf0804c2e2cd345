"""The refs store: its on-disk schema (`schema`, the pydantic models), the store itself
(`refs`), fingerprint stamps and where a cache's store is (`stamps`), and a store that
follows its cache to another path (`moves`)."""
