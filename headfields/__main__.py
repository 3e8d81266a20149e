"""``python -m headfields train | render | export | view ...``: see :mod:`headfields.apps.commands`."""

from headfields.apps.commands import main

raise SystemExit(main())
