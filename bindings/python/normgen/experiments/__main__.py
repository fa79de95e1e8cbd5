import sys

from .digits import main

sys.exit(main())
