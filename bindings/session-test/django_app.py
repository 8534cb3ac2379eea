"""The Django side of bindings/session-test.sh: one counter in the shared session.

Served by gunicorn behind the test's nginx at /django/; GDS_SEGMENT names the segment (made by
the script). The cookie name is the session format's (SESSION-FORMAT.md, section 2).
"""
import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="gardenstate-session-test-" + "x" * 40,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1"],
    INSTALLED_APPS=["django.contrib.sessions"],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
    SESSION_ENGINE="gardenstate.django",
    SESSION_COOKIE_NAME="gds_session",
    GARDENSTATE={"name": os.environ["GDS_SEGMENT"]},
    DATABASES={},
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def count(request):
    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse(f"{request.session['n']} django\n", content_type="text/plain")


urlpatterns = [path("django/count", count)]
application = get_wsgi_application()
