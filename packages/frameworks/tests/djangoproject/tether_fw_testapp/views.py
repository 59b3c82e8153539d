"""Views the threaded tests hammer: a transaction with a savepoint, and a streamed count."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from .models import Item


def add(request: HttpRequest, alias: str, token: str) -> HttpResponse:
    """Two statements in one transaction, plus a savepoint that is rolled back."""
    with transaction.atomic(using=alias):
        Item.objects.using(alias).create(token=token)
        try:
            with transaction.atomic(using=alias):
                Item.objects.using(alias).create(token=f"{token}-gone")
                raise LookupError
        except LookupError:
            pass
        Item.objects.using(alias).filter(token=token).update(label="done")
    return HttpResponse("ok")


def count(request: HttpRequest, alias: str) -> HttpResponse:
    """Count rows with QuerySet.iterator() (a server-side cursor on PostgreSQL)."""
    total = sum(1 for _ in Item.objects.using(alias).iterator(chunk_size=50))
    return HttpResponse(str(total))
