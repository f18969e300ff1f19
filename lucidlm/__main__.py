"""`python -m lucidlm` (and `torchrun -m lucidlm train ...`) run the command line."""

import sys

from .cli import main

sys.exit(main())
