"""The example application of ``examples/kubernetes``: one cluster scheduler with one job.

``otpkit run myapp.tree:root`` starts it on every pod. The scheduler is a Singleton under
the ``majority`` policy: its holder fires each tick of ``hello`` once in the whole
cluster (``OTPKIT_EXPECTED_SIZE`` keeps a lone pod from firing at cold boot), and every
pod keeps a replica of the run ledger in ``$OTPKIT_DATA_DIR`` (the pod's volume), so a
pod that takes over knows which ticks ran.

``MYAPP_SCHEDULE`` (default ``* * * * *``, every minute) is the job's cron expression,
read in Europe/Berlin time: a zone needs the image's ``tzdata``.
"""

from __future__ import annotations

import os

from otpkit.scheduler import Job, Scheduler

ZONE = "Europe/Berlin"

root = Scheduler(
    [
        Job(
            "hello",
            os.environ.get("MYAPP_SCHEDULE", "* * * * *"),
            "myapp.tasks:hello",
            timezone=ZONE,
        )
    ]
)
