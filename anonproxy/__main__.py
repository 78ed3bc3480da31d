from anonproxy.cli.main import main

raise SystemExit(main())
