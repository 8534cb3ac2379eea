"""The tiny Django site of the Django end-to-end test (served by gunicorn's workers).

Only settings name gardenstate: SESSION_ENGINE and GARDENSTATE (the segment is
$GDS_TEST_SEGMENT). Each worker opens the segment on its first session.

/login   logs "ada" in as django.contrib.auth.login does to a session: cycle_key() (a new
         key, the data kept), then the user in the session, and a counter at 0.
/incr    increments the logged-in user's counter; ?die=before is SIGKILLed before its
         session is saved, ?die=after after it is saved, both before answering.
"""

import os
import signal

import _support  # noqa: F401  (sys.path)
import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="gardenstate-test-" + "x" * 40,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    INSTALLED_APPS=["django.contrib.sessions"],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
    SESSION_ENGINE="gardenstate.django",
    GARDENSTATE={"name": os.environ["GDS_TEST_SEGMENT"],
                 "options": {"capacity_bytes": 8 << 20, "max_entries": 1024}},
    DATABASES={},
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def health(request):
    return HttpResponse("ok")


def login(request):
    request.session.cycle_key()
    request.session["user"] = "ada"
    request.session["n"] = 0
    return JsonResponse({"pid": os.getpid()})


def incr(request):
    if request.session.get("user") != "ada":
        return JsonResponse({"error": "not logged in"}, status=403)
    request.session["n"] += 1
    die = request.GET.get("die")
    if die == "after":
        request.session.save()
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    return JsonResponse({"n": request.session["n"], "pid": os.getpid()})


def show(request):
    return JsonResponse({"n": request.session.get("n"), "user": request.session.get("user")})


urlpatterns = [path("health", health), path("login", login), path("incr", incr),
               path("show", show)]
application = get_wsgi_application()
