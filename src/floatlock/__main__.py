import sys

from floatlock.cli import main

sys.exit(main())
