from django.contrib import admin

from labeling import models


class LabelClassInline(admin.TabularInline):
    model = models.LabelClass
    extra = 0


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "task_type", "overlap", "strategy", "created_at"]
    search_fields = ["name"]
    inlines = [LabelClassInline, MembershipInline]
    raw_id_fields = ["active_model", "created_by"]


@admin.register(models.LabelClass)
class LabelClassAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "name", "shortcut", "color", "order"]
    list_filter = ["project"]


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "user", "role", "hourly_rate", "price_per_label"]
    list_filter = ["role"]
    raw_id_fields = ["user", "project"]


@admin.register(models.Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "original_name", "split", "status", "priority", "annotation_count", "wanted"]
    list_filter = ["split", "status"]
    search_fields = ["original_name", "sha256"]
    raw_id_fields = ["project", "gold_label"]
    readonly_fields = ["sha256", "width", "height", "annotation_count", "lease_count"]


@admin.register(models.Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "annotator", "state", "created_at", "expires_at"]
    list_filter = ["state"]
    raw_id_fields = ["item", "annotator", "project"]


@admin.register(models.Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    """Annotations are immutable raw truth: viewable, never editable here."""

    list_display = ["id", "item", "annotator", "label", "duration_ms", "submitted_at", "retracted_at"]
    raw_id_fields = ["item", "annotator", "lease", "label", "suggested_label", "model_version"]

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


for model in (models.ConsensusLabel, models.Review, models.ImportJob, models.MLJob, models.ModelVersion):
    admin.site.register(model)


@admin.register(models.Embedding)
class EmbeddingAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "backbone", "dim", "created_at"]
    exclude = ["vector"]
    raw_id_fields = ["item"]


@admin.register(models.Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "model_version", "label", "confidence"]
    raw_id_fields = ["item", "model_version", "label"]
