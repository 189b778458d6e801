"""`python -m gptlab` (and `torchrun -m gptlab`) run the command-line tool."""

import sys

from gptlab.cli import main

sys.exit(main())
