import sys

from pri.cli import main

sys.exit(main())
