from kpod_otel.cli import main

raise SystemExit(main())
