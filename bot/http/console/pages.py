"""The console's pages: sign in and out, the workflows, adding one, running one, the gallery,
the jams (read-only) and, for admins, operations (backends, the queue, the last hour).

Each handler is as thin as an API route: it checks the session (and the role, for admin pages),
asks the engine and renders a template (Jinja2, autoescape on: nothing from a workflow or a job
is ever written unescaped). Running and adding go through the API itself from the page's script,
with the session's cookie and CSRF token. Every response but the API docs page gets a strict
Content-Security-Policy: scripts and styles only from the console's own static files.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from markupsafe import Markup

from bot.errors import NotFound, UserError
from bot.http.admin_models import Stats
from bot.http.console.charts import Series, line_chart
from bot.http.console.forms import form_fields
from bot.http.console.sessions import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSIONS,
    SIGN_IN_COOKIE,
    Session,
    csrf_ok,
    csrf_token,
    session_of,
    set_cookie,
)
from bot.http.console.snippets import snippets
from bot.http.operations import stats_of
from bot.http.problems import ApiProblem
from bot.http.routes import _allowed, api_of, output_response
from bot.http.service import HttpApi
from bot.jams import Jam, Standing
from bot.jobs.model import Job
from bot.workflows import Workflow

STATIC = Path(__file__).parent / "static"
CONSOLE_PATHS = {"static": "/console/static"}
SIGN_IN_SECONDS = 3600
GALLERY_SIZE = 48
JAMS_LISTED = 50
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

pages = web.RouteTableDef()
_env = jinja2.Environment(
    loader=jinja2.PackageLoader("bot.http.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


_env.filters["when"] = _when


class Refused(Exception):
    """A page that can't be shown to this browser: rendered as an error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every response but the API docs page gets (its page script is inline)."""
    if request.path == "/docs" or request.path.startswith("/docs/"):
        return
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")


def redirect(location: str) -> web.Response:
    """A 303 to a page of the console (a path, never a URL from outside)."""
    return web.Response(status=303, headers={"Location": location})


def _secure(api: HttpApi) -> bool:
    return (api.settings.http.public_url or "").startswith("https://")


def render(
    request: web.Request,
    template: str,
    *,
    session: Session | None = None,
    status: int = 200,
    **context: Any,
) -> web.Response:
    """A page from its template, with what the layout shows of the session."""
    html = _env.get_template(template).render(
        key=session.key if session else None,
        csrf=session.csrf if session else "",
        static=CONSOLE_PATHS["static"],
        **context,
    )
    response = web.Response(text=html, content_type="text/html", status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


Page = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def page(*, admin: bool = False) -> Callable[[Page], Callable[[web.Request], Any]]:
    """A page for a signed-in browser (an admin's, with `admin`); others go to sign in.

    Its state-changing requests must carry the session's CSRF token in the form.
    """

    def wrap(handler: Page) -> Callable[[web.Request], Any]:
        async def run(request: web.Request) -> web.StreamResponse:
            signed_in = session_of(request)
            if signed_in is None:
                return redirect("/")
            session_id, session = signed_in
            try:
                if admin and not session.key.is_admin:
                    raise Refused(403, "This page is for admin keys only.")
                if request.method == "POST":
                    form = await request.post()
                    if not csrf_ok(session_id, str(form.get(CSRF_FIELD, ""))):
                        raise Refused(403, "The form's CSRF token is missing or wrong.")
                return await handler(request, session)
            except Refused as exc:
                return render(
                    request, "error.html", session=session, status=exc.status, message=exc.message
                )
            except UserError as exc:
                status = 404 if isinstance(exc, NotFound) else 400
                message = exc.message.replace("`", "'")
                return render(
                    request, "error.html", session=session, status=status, message=message
                )

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    return wrap


# signing in and out ----------------------------------------------------------------------------
def _sign_in_page(request: web.Request, *, status: int = 200, error: str = "") -> web.Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request, "sign_in.html", status=status, sign_in_csrf=csrf_token(token), error=error
    )
    secure = _secure(api_of(request))
    set_cookie(response, SIGN_IN_COOKIE, token, secure=secure, max_age=SIGN_IN_SECONDS)
    return response


@pages.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    """The sign-in page; signed in, the workflows."""
    if session_of(request) is not None:
        return redirect("/workflows")
    return _sign_in_page(request)


@pages.post("/sign-in")
async def sign_in(request: web.Request) -> web.StreamResponse:
    """Check a key and start a session for it."""
    form = await request.post()
    if not csrf_ok(request.cookies.get(SIGN_IN_COOKIE, ""), str(form.get(CSRF_FIELD, ""))):
        return _sign_in_page(
            request, status=403, error="The sign-in form expired; please try again."
        )
    api = api_of(request)
    key = api.keys.check(str(form.get("key", "")).strip())
    if key is None:
        return _sign_in_page(
            request, status=401, error="This API key is not valid (unknown or revoked)."
        )
    sessions = request.app[SESSIONS]
    session_id = sessions.start(key)
    response = redirect("/workflows")
    set_cookie(response, SESSION_COOKIE, session_id, secure=_secure(api), max_age=sessions.lifetime)
    response.del_cookie(SIGN_IN_COOKIE, path="/")
    return response


@pages.post("/sign-out")
@page()
async def sign_out(request: web.Request, session: Session) -> web.StreamResponse:
    """End the session."""
    request.app[SESSIONS].end(request.cookies.get(SESSION_COOKIE))
    response = redirect("/")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# workflows -------------------------------------------------------------------------------------
def _visible(api: HttpApi, session: Session) -> list[Workflow]:
    if session.key.is_admin:
        return [api.engine.workflows[n] for n in sorted(api.engine.workflows)]
    return _allowed(api, session.key)


@pages.get("/workflows")
@page()
async def workflows(request: web.Request, session: Session) -> web.StreamResponse:
    """The workflows this key may run (an admin: every one)."""
    api = api_of(request)
    return render(request, "workflows.html", session=session, workflows=_visible(api, session))


@pages.get("/add-workflow")
@page(admin=True)
async def add_workflow(request: web.Request, session: Session) -> web.StreamResponse:
    """Upload a workflow, see its preview, save it."""
    return render(request, "add.html", session=session)


def _workflow(api: HttpApi, session: Session, name: str) -> Workflow:
    if session.key.is_admin:
        return api.engine.workflow(name)
    return api.admission.workflow_for(session.key.requester(api.settings.limits), name)


@pages.get("/workflows/{name}")
@page()
async def workflow_page(request: web.Request, session: Session) -> web.StreamResponse:
    """A workflow's form, its live run and ready-to-paste code."""
    api = api_of(request)
    workflow = _workflow(api, session, request.match_info["name"])
    requester = session.key.requester(api.settings.limits)
    fields = form_fields(
        workflow,
        max_count=api.admission.limits(requester).max_count,
        object_info=api.engine.object_info,
        given=request.query,
    )
    return render(
        request,
        "workflow.html",
        session=session,
        workflow=workflow,
        fields=fields,
        snippets=snippets(workflow, api.base_url(request), object_info=api.engine.object_info),
    )


@pages.post("/workflows/{name}/delete")
@page(admin=True)
async def delete_workflow(request: web.Request, session: Session) -> web.StreamResponse:
    """Remove a workflow's pack."""
    api_of(request).engine.delete_workflow(request.match_info["name"])
    return redirect("/workflows")


# gallery ---------------------------------------------------------------------------------------
def run_again_url(job: Job) -> str:
    """The workflow's page with the job's values filled in (files must be given again)."""
    values = {
        k: ("true" if v else "false") if isinstance(v, bool) else v
        for k, v in job.values.items()
        if isinstance(v, str | int | float) and not str(k).startswith("_")
    }
    return f"/workflows/{job.workflow}?{urlencode(values)}"


@pages.get("/gallery")
@page()
async def gallery(request: web.Request, session: Session) -> web.StreamResponse:
    """Recent results: this key's, or everyone's for an admin (Discord's too)."""
    api = api_of(request)
    owner = None if session.key.is_admin else session.key.member_id
    jobs = [j for j in api.engine.recent(owner_id=owner, limit=GALLERY_SIZE) if j.outputs]
    jobs.sort(key=lambda j: j.created_at, reverse=True)
    return render(request, "gallery.html", session=session, jobs=jobs, run_again=run_again_url)


# jams (read-only) ------------------------------------------------------------------------------
@pages.get("/jams")
@page()
async def jams(request: web.Request, session: Session) -> web.StreamResponse:
    """The latest jams of every server, with their entries counted."""
    book = api_of(request).jams
    listed = book.recent(None, limit=JAMS_LISTED)
    counts = {jam.id: len(book.entries(jam.id)) for jam in listed}
    return render(request, "jams.html", session=session, jams=listed, counts=counts)


@dataclass(frozen=True)
class JamEntry:
    """An entry as the jam's gallery shows it: its standing and its job (None once gone)."""

    standing: Standing
    job: Job | None


@pages.get("/jams/{jam_id}")
@page()
async def jam_page(request: web.Request, session: Session) -> web.StreamResponse:
    """One jam's gallery: every entry with its votes, most votes first."""
    api = api_of(request)
    jam = api.jams.get(request.match_info["jam_id"])
    entries = [JamEntry(s, api.engine.get_job(s.entry.job_id)) for s in api.jams.standings(jam.id)]
    return render(request, "jam.html", session=session, jam=jam, entries=entries)


@pages.get("/jams/{jam_id}/entries/{job_id}/outputs/{n}")
@page()
async def jam_output(request: web.Request, session: Session) -> web.StreamResponse:
    """An output of a jam's entry: any signed-in key may see a jam's gallery."""
    api = api_of(request)
    jam: Jam = api.jams.get(request.match_info["jam_id"])
    job_id = request.match_info["job_id"]
    if not any(e.job_id == job_id for e in api.jams.entries(jam.id)):
        raise NotFound(f"Job '{job_id}' is not an entry of jam '{jam.id}'.")
    job = api.engine.get_job(job_id)
    if job is None:
        raise NotFound(f"The entry '{job_id}' is no longer stored.")
    try:
        return output_response(job, request.match_info["n"])
    except ApiProblem as exc:
        raise Refused(exc.status, exc.detail) from None


# operations ------------------------------------------------------------------------------------
def _minutes_ago(seconds: float) -> str:
    return "now" if seconds <= 0 else f"-{round(seconds / 60)} min"


def operation_charts(stats: Stats, now: float) -> list[Markup]:
    """The last hour as three SVG charts: busy share per backend, queue length, job time."""
    start = now - stats.span
    ticks = [(now - a, _minutes_ago(a)) for a in (3600, 2700, 1800, 900, 0) if a <= stats.span]
    names = [b.name for b in stats.backends]
    names += sorted({n for s in stats.samples for n in s.busy} - set(names))
    samples = stats.samples
    busy = [
        Series(name, [(s.at, s.busy[name] * 100 if name in s.busy else None) for s in samples])
        for name in names
    ]
    queue = [
        Series("waiting", [(s.at, float(s.queued)) for s in samples]),
        Series("running", [(s.at, float(s.running)) for s in samples]),
    ]
    job_time = [Series("mean seconds", [(s.at, s.job_seconds) for s in samples])]
    # the three share the hour along the bottom
    chart = functools.partial(line_chart, x_range=(start, now), x_labels=ticks)
    return [
        chart(
            busy,
            title="GPU busy share per backend (%)",
            y_max=100,
            y_label=lambda v: f"{v:.0f}%",
            chart_id="chart-busy",
        ),
        chart(queue, title="Queue length", chart_id="chart-queue"),
        chart(
            job_time,
            title="Job time (mean seconds on ComfyUI)",
            y_label=lambda v: f"{v:.0f} s" if v >= 10 or v == 0 else f"{v:.1f} s",
            chart_id="chart-job-time",
        ),
    ]


@pages.get("/operations")
@page(admin=True)
async def operations(request: web.Request, session: Session) -> web.StreamResponse:
    """Backends, the queue, and the last hour drawn as charts."""
    stats = stats_of(api_of(request))
    charts = operation_charts(stats, time.time())
    return render(request, "operations.html", session=session, stats=stats, charts=charts)
