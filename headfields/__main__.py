"""``python -m headfields train | render | export | view ...``: see :mod:`headfields.commands`."""

from headfields.commands import main

raise SystemExit(main())
