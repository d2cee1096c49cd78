"""The worker fleet: the manager, the worker processes and their job loops, and tasks."""
