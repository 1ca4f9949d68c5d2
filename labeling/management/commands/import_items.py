"""``manage.py import_items PROJECT_ID DIR``: import every image under a server folder.

Prints progress lines (``processed/total``) while it runs, then a summary and each
rejection; ``--json`` prints the report (the API's shape) as the last line instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.errors import ApplicationError
from labeling.models import Project
from labeling.services.items import items_import_folder


class Command(BaseCommand):
    help = "Import every image under DIR (recursively) into project PROJECT_ID."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project_id", type=int, help="The project to import into.")
        parser.add_argument("directory", type=Path, help="A folder on this server; read recursively.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON at the end.")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(pk=options["project_id"]).first()
        if project is None:
            raise CommandError(f"Project {options['project_id']} does not exist.")
        directory: Path = options["directory"]

        def progress(processed: int, total: int | None) -> None:
            self.stdout.write(f"{processed}/{total if total is not None else '?'}")
            self.stdout.flush()

        try:
            report = items_import_folder(project=project, directory=directory, on_progress=progress)
        except ApplicationError as exc:
            raise CommandError(exc.message)
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict()))
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {report.imported}, duplicates {len(report.duplicates)}, rejected {len(report.rejected)}"
            )
        )
        for rejected in report.rejected:
            self.stdout.write(f"rejected {rejected['file']}: {rejected['code']}: {rejected['reason']}")
