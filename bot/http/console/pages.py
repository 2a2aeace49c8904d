"""The console's pages: sign in and out, the workflows, adding one, running one, the gallery.

Each handler is as thin as an API route: it checks the session (and the role, for admin pages),
asks the engine and renders a template (Jinja2, autoescape on: nothing from a workflow or a job
is ever written unescaped). Running and adding go through the API itself from the page's script,
with the session's cookie and CSRF token. Every response but the API docs page gets a strict
Content-Security-Policy: scripts and styles only from the console's own static files.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from bot.errors import NotFound, UserError
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
from bot.http.routes import _allowed, api_of
from bot.http.service import HttpApi
from bot.jobs.model import Job
from bot.workflows import Workflow

STATIC = Path(__file__).parent / "static"
CONSOLE_PATHS = {"static": "/console/static"}
SIGN_IN_SECONDS = 3600
GALLERY_SIZE = 48
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
