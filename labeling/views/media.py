"""Private media: an item's image and thumbnail, for members of its project only.

There is no public MEDIA_URL route; files are streamed from default storage by these
views after a membership check. The caller is identified by the browser session or by
``Authorization: Token <key>`` (API clients). Anyone who may not see the item gets 404
(its existence is not revealed); an anonymous browser navigation is sent to the login
page instead.

The path served is the one stored on the item, never anything built from the request.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.auth.views import redirect_to_login
from django.http import FileResponse, Http404, HttpRequest, HttpResponseBase
from django.urls import NoReverseMatch, path
from django.views.decorators.http import require_safe
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from labeling.errors import ApplicationError
from labeling.models import Item
from labeling.selectors.access import item_access
from labeling.services.imports import SUFFIX_CONTENT_TYPES

CACHE_CONTROL = "private, max-age=3600"


def _request_user(request: HttpRequest) -> AbstractBaseUser | AnonymousUser:
    """The session user, else the user of a valid ``Authorization: Token``, else anonymous."""
    if request.user.is_authenticated:
        return request.user
    try:
        result = TokenAuthentication().authenticate(request)  # a Django request works: it reads META only
    except AuthenticationFailed:
        return AnonymousUser()
    return result[0] if result else AnonymousUser()


def _wants_html(request: HttpRequest) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def safe_download_name(item: Item, suffix: str) -> str:
    """An ASCII file name for Content-Disposition: the original stem, cleaned, with the stored suffix."""
    stem = PurePosixPath(item.original_name.replace("\\", "/")).stem
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:100]
    return f"{stem or f'item-{item.pk}'}{suffix}"


def _serve(request: HttpRequest, item_id: int, *, thumbnail: bool) -> HttpResponseBase:
    user = _request_user(request)
    if not user.is_authenticated and _wants_html(request):
        try:
            return redirect_to_login(request.get_full_path())
        except NoReverseMatch:
            raise Http404("Not found.")
    try:
        item = item_access(item_id=item_id, user=user)
    except ApplicationError:
        # Non-member, unknown item or anonymous: all look the same from outside.
        raise Http404("Not found.")
    field = item.thumbnail if thumbnail else item.file
    if not field or not field.name:
        raise Http404("Not found.")
    suffix = ".webp" if thumbnail else PurePosixPath(field.name).suffix.lower()
    content_type = SUFFIX_CONTENT_TYPES.get(suffix, "application/octet-stream")
    try:
        fh = field.storage.open(field.name, "rb")
    except (FileNotFoundError, OSError):
        raise Http404("Not found.")
    name = safe_download_name(item, suffix)
    if thumbnail:
        name = name[: -len(suffix)] + "-thumb" + suffix
    response = FileResponse(fh, content_type=content_type, as_attachment=False, filename=name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = CACHE_CONTROL
    # An image is never a document: no scripts, even if a browser were to render it as one.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Vary"] = "Cookie, Authorization"
    return response


@require_safe
def item_image(request: HttpRequest, item_id: int) -> HttpResponseBase:
    """The item's image file as imported."""
    return _serve(request, item_id, thumbnail=False)


@require_safe
def item_thumbnail(request: HttpRequest, item_id: int) -> HttpResponseBase:
    """The item's WebP thumbnail."""
    return _serve(request, item_id, thumbnail=True)


urlpatterns = [
    path("files/items/<int:item_id>/image", item_image, name="item-image"),
    path("files/items/<int:item_id>/thumbnail", item_thumbnail, name="item-thumbnail"),
]
