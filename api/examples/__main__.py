"""``python -m api.examples``: rebuild examples.json from real answers over the samples."""

import sys

from . import main

sys.exit(main())
