"""``python -m cohort ...`` (and ``torchrun ... -m cohort train ...``) runs the ``cohort`` command."""

import sys

from cohort.cli import main

sys.exit(main())
