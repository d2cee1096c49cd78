"""python -m app: see app/cli.py."""

import gc

# No garbage collection while the modules load: they make over a hundred thousand objects and
# next to no garbage, and the collections they set off (about 180) cost a tenth of their CPU,
# which a fleet's manager spends before it forks its first children. cli.main turns collection
# back on once it knows the command; the worker command's manager does so once it has forked.
gc.disable()

from app.cli import main  # noqa: E402 - after the line above, which is why it is here

raise SystemExit(main())
