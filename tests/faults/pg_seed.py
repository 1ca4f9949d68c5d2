"""Seed a private database for the PostgreSQL-restart test; prints what the clients need as JSON.

Run as ``python -m tests.faults.pg_seed N_ANNOTATORS N_ITEMS`` with DATABASE_URL pointing at
the private cluster (already migrated).
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotate.settings")
    import django

    django.setup()
    from rest_framework.authtoken.models import Token

    from labeling.models import LabelClass
    from tests.factories import project_with_members
    from tests.labeling.test_queue_services import make_items

    n_annotators, n_items = int(sys.argv[1]), int(sys.argv[2])
    project, _, annotators = project_with_members(n_annotators=n_annotators)
    make_items(project, n_items)
    print(
        json.dumps(
            {
                "project": project.pk,
                "tokens": [Token.objects.create(user=user).key for user in annotators],
                "labels": list(LabelClass.objects.filter(project=project).values_list("id", flat=True)),
            }
        )
    )


if __name__ == "__main__":
    main()
