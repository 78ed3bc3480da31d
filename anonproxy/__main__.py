"""`python -m anonproxy`: the same command line as the `anonproxy` script."""

from anonproxy.cli.main import main

raise SystemExit(main())
