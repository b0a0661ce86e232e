"""``python -m otpkit``: the ``otpkit`` command."""

from otpkit.cli import main

raise SystemExit(main())
