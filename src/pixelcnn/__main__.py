from pixelcnn.cli import main

raise SystemExit(main())
