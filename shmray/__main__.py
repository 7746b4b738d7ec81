"""``python -m shmray``: the command line of shmray._cli."""
from ._cli import main

raise SystemExit(main())
