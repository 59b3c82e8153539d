"""Django's MySQL backend on PyMySQL and tether: ``"tether.frameworks.django.mysql"``."""
