import sys

from doctags.cli import main

sys.exit(main())
