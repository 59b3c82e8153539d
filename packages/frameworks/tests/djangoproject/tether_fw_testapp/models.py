"""One model: a row per request, with a token the test client chose."""

from __future__ import annotations

from django.db import models


class Item(models.Model):
    token = models.CharField(max_length=64, unique=True)
    label = models.CharField(max_length=20, default="new")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "tether_fw_testapp"
