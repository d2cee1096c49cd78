"""The job lifecycle: submit, read, cancel, retry, delete, auth and health. Routers and
workers call these; these call the store (Postgres) and dispatch (Redis)."""
