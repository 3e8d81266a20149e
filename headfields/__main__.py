"""``python -m headfields render | export ...``: see :mod:`headfields.commands`."""

from headfields.commands import main

raise SystemExit(main())
