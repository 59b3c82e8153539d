from django.urls import path

from . import views

urlpatterns = [
    path("add/<str:alias>/<str:token>", views.add),
    path("count/<str:alias>", views.count),
]
