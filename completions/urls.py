from django.urls import path

from completions import responses_views, views

urlpatterns = [
    path("models", views.models_list),
    # Model ids contain slashes (@cf/meta/llama-3.1-8b-instruct).
    path("models/<path:model_id>", views.model_detail),
    path("chat/completions", views.chat_completions),
    path("completions", views.completions),
    path("embeddings", views.embeddings),
    path("responses", responses_views.create_response),
    path("responses/<str:response_id>", responses_views.response_detail),
]
