"""Django's PostgreSQL backend on tether: ``"tether.frameworks.django.postgresql"``."""
