import sys

from vidclip.cli.main import main

sys.exit(main())
