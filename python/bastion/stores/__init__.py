"""Durable state on SQLite: jobs (``bastion.stores.jobs``)."""
