"""`python -m mtdnn` is the `mtdnn` command."""

from mtdnn.cli import main

raise SystemExit(main())
