from django.urls import path

from apikeys import views as key_views
from completions import media_views, responses_views, views

urlpatterns = [
    path("models", views.models_list),
    # Model ids contain slashes (@cf/meta/llama-3.1-8b-instruct).
    path("models/<path:model_id>", views.model_detail),
    path("chat/completions", views.chat_completions),
    path("completions", views.completions),
    path("embeddings", views.embeddings),
    path("responses", responses_views.create_response),
    path("responses/<str:response_id>", responses_views.response_detail),
    path("images/generations", media_views.image_generations),
    path("audio/transcriptions", media_views.audio_transcriptions),
    path("audio/translations", media_views.audio_translations),
    path("audio/speech", media_views.audio_speech),
    path("moderations", media_views.moderations),
    path("rerank", media_views.rerank),
    # The calling key's own description and usage.
    path("key", key_views.key_detail),
    path("usage", key_views.usage),
]
