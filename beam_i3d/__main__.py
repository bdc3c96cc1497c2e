import sys

from beam_i3d.cli import main

sys.exit(main())
