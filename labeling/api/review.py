"""API: consensus — the review queue, reviews, gold items, full recompute, quality summary.

Reviewers and managers review; managers mark gold items and ask for a recompute; the
quality summary (agreement, per-annotator accuracy, human vs panel vs model error) is for
managers only, like every cost or per-annotator figure.
"""

from __future__ import annotations

from dataclasses import asdict

from django.urls import path, reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.selectors.access import MANAGE, REVIEW, item_access, project_access
from labeling.selectors.consensus import quality_summary, review_item_annotations, review_next
from labeling.services.consensus import consensus_refresh_request, item_set_gold, review_submit


class ReviewNextApi(APIView):
    """The next disputed item, with every live annotation and the model's suggestion."""

    class AnnotationSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReviewNextAnnotation"

        id = serializers.IntegerField()
        annotator_name = serializers.CharField()
        label_id = serializers.IntegerField()
        duration_ms = serializers.IntegerField()
        submitted_at = serializers.DateTimeField()

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReviewNextOutput"

        item_id = serializers.IntegerField()
        image_url = serializers.CharField()
        original_name = serializers.CharField()
        annotations = serializers.ListField(child=serializers.DictField())
        consensus = serializers.DictField(allow_null=True)
        suggestion = serializers.DictField(allow_null=True)

    @extend_schema(responses={200: OutputSerializer, 204: OpenApiResponse(description="Nothing to review.")})
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=REVIEW)
        item = review_next(project=project)
        if item is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        annotations = [self.AnnotationSerializer(a).data for a in review_item_annotations(item=item)]
        consensus = getattr(item, "consensus", None)
        prediction = getattr(item, "prediction", None)
        data = {
            "item_id": item.pk,
            "image_url": reverse("item-image", kwargs={"item_id": item.pk}),
            "original_name": item.original_name,
            "annotations": annotations,
            "consensus": {
                "label_id": consensus.label_id,
                "confidence": consensus.confidence,
                "method": consensus.method,
            }
            if consensus
            else None,
            "suggestion": {"label_id": prediction.label_id, "confidence": prediction.confidence}
            if prediction
            else None,
        }
        return Response(self.OutputSerializer(data).data)


class ReviewCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReviewCreateInput"

        item = serializers.IntegerField()
        label = serializers.IntegerField()
        note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReviewCreateOutput"

        id = serializers.IntegerField()
        item_id = serializers.IntegerField()
        label_id = serializers.IntegerField()
        note = serializers.CharField()
        created_at = serializers.DateTimeField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request: Request, project_id: int) -> Response:
        project_access(project_id=project_id, user=request.user, roles=REVIEW)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        item = item_access(item_id=data["item"], user=request.user, project_id=project_id, roles=REVIEW)
        review = review_submit(item_id=item.pk, reviewer=request.user, label_id=data["label"], note=data["note"])
        return Response(self.OutputSerializer(review).data, status=status.HTTP_201_CREATED)


class ItemGoldSetApi(APIView):
    """Mark an item as gold (a known answer, interleaved into queues) or unmark it."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ItemGoldSetInput"

        label = serializers.IntegerField(allow_null=True, help_text="The known answer; null removes it.")

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ItemGoldSetOutput"

        id = serializers.IntegerField()
        gold_label_id = serializers.IntegerField(allow_null=True)

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def put(self, request: Request, project_id: int, item_id: int) -> Response:
        item = item_access(item_id=item_id, user=request.user, project_id=project_id, roles=MANAGE)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        item = item_set_gold(item=item, label_id=payload.validated_data["label"])
        return Response(self.OutputSerializer(item).data)


class ConsensusRefreshApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ConsensusRefreshOutput"

        id = serializers.IntegerField()
        kind = serializers.CharField()
        status = serializers.CharField()

    @extend_schema(request=None, responses={202: OutputSerializer})
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        job = consensus_refresh_request(project=project)
        return Response(self.OutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class QualityApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "QualityOutput"

        method = serializers.CharField(allow_null=True)
        human_level_error = serializers.FloatField(allow_null=True)
        panel_error = serializers.FloatField(allow_null=True)
        model_error = serializers.FloatField(allow_null=True)
        annotators = serializers.ListField(child=serializers.DictField())
        agreement = serializers.DictField(allow_null=True)
        reviews = serializers.IntegerField()
        in_review = serializers.IntegerField()
        computed_at = serializers.CharField(allow_null=True)

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        return Response(self.OutputSerializer(asdict(quality_summary(project=project))).data)


urlpatterns = [
    path("projects/<int:project_id>/review/next/", ReviewNextApi.as_view(), name="review-next"),
    path("projects/<int:project_id>/reviews/", ReviewCreateApi.as_view(), name="review-create"),
    path("projects/<int:project_id>/items/<int:item_id>/gold/", ItemGoldSetApi.as_view(), name="item-gold"),
    path("projects/<int:project_id>/consensus/refresh/", ConsensusRefreshApi.as_view(), name="consensus-refresh"),
    path("projects/<int:project_id>/quality/", QualityApi.as_view(), name="quality"),
]
