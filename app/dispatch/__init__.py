"""Redis: the key layout, pushes, blocking pops, heartbeats, locks and scripts."""
