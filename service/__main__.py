"""``python -m service``: the command line (keys, dev)."""

from service.cli import main

raise SystemExit(main())
