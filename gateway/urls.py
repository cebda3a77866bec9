from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path, re_path

from gateway import sso, views

# The admin's login page, with "Sign in with <provider>" when single sign-on is on; the
# same page as Django's otherwise.
admin.site.login_template = "gateway/admin_login.html"

urlpatterns = [
    path("healthz", views.healthz),
    path("readyz", views.readyz),
    path("metrics", views.prometheus_metrics),
    path("v1/openapi.json", views.openapi),
    path("v1/", include("completions.urls")),
    # Before the admin's own URLs, so that its login is the rate-limited one.
    path("admin/login/", views.admin_login),
    # Single sign-on (gateway/sso.py): 404 while OIDC_ISSUER is unset.
    path("admin/oidc/", include(sso.urlpatterns)),
    path("admin/", admin.site.urls),
]
if settings.DEBUG:
    # daphne does not serve the admin's static files; in production a web server does.
    urlpatterns += staticfiles_urlpatterns()
urlpatterns += [
    # Anything else is an unknown API path, answered in OpenAI's error format.
    re_path(r"^(?!admin)(?P<path>.*)$", views.not_found),
]

handler400 = "gateway.views.bad_request"
handler404 = "gateway.views.page_not_found"
handler500 = "gateway.views.server_error"
