"""Tooling for development and tests, beside the product and never shipped with it.

- `services`: the Postgres and Redis to use, starting private ones under `.local/` when the
  configured ones do not answer (`python -m devtools ensure | stop` for the shell scripts);
- `postgres_server`, `redis_server`: those private servers, around one base class (`server`);
- `dev`: `python -m app dev`, the API, the fleet and the servers in one foreground process;
- `processes`, `waiting`, `net`, `probes`, `sandbox`: the small helpers the tests and the
  benchmark share (child processes, polling with a deadline, free ports, "does it answer",
  a database and key prefix of one's own).

The image ships `app/` only (docker/Dockerfile.dockerignore); `python -m app dev` imports this
package lazily and says so when it is absent.
"""
