"""Job states, request and reply shapes, and errors: rules only, no I/O."""
