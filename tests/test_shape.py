"""The house rules, held by tests: errors in one module with a label each, work apart from the web.

The work modules take the resources they use and never the web application, so a worker
process (V1's media and fan-out workers) can call them with resources it opened itself. The
last test does exactly that, against the real PostgreSQL and S3.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import app
from app import feed, media, posts, users
from app.cursors import Cursors
from app.db import open_database
from app.delivery import ImageUrls
from app.errors import AppError
from app.images import open_image_pool
from app.metrics import Metrics
from app.passwords import open_passwords
from app.settings import Settings
from app.storage import open_storage
from app.uploads import ByteBudget, Upload
from tests.helpers import CORPUS, PHOTO, ROOT

WORK_MODULES = [
    "users",
    "posts",
    "feed",
    "media",
    "images",
    "storage",
    "db",
    "uploads",
    "sweep",
    "deletes",
    "direct_uploads",
    "media_jobs",
    "queue",
    "dimensions",
]


def every_error_class() -> list[type[AppError]]:
    for module in pkgutil.walk_packages(app.__path__, "app."):
        importlib.import_module(module.name)
    found: list[type[AppError]] = []
    pending = [AppError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_class_lives_in_the_errors_module() -> None:
    elsewhere = [f"{c.__module__}.{c.__name__}" for c in every_error_class()]
    assert [name for name in elsewhere if not name.startswith("app.errors.")] == []


def test_every_error_code_has_a_label_of_its_own() -> None:
    """A class that says a code says its label too, so no outcome is counted as plain 'error'."""
    for cls in every_error_class():
        assert re.fullmatch(r"[a-z_]+", cls.code), cls
        assert re.fullmatch(r"[a-z_]+", cls.label), cls
        if "code" in vars(cls):
            assert "label" in vars(cls), f"{cls.__name__} has the code {cls.code} but no label"
        if cls is not AppError:
            assert cls.label != "error", f"{cls.__name__} is counted as a plain error"


def test_the_upload_outcomes_that_had_no_label_have_one() -> None:
    """A database timeout, a dead image worker and the request deadline were counted 'error'."""
    labels = {cls.code: cls.label for cls in every_error_class() if "code" in vars(cls)}
    assert labels["database_timeout"] == "database_error"
    assert labels["deadline_exceeded"] == "deadline_exceeded"
    worker_failed = [c for c in every_error_class() if c.label == "worker_failed"]
    assert [c.status for c in worker_failed] == [503]
    alerts = (ROOT / "docker" / "prometheus" / "alerts.yml").read_text()
    for server_side in ("overloaded", "storage_error", "database_error", "worker_failed"):
        assert server_side in alerts, f"the upload success alert does not count {server_side}"
    assert "deadline_exceeded" in alerts


def _imports_and_annotations(path: Path) -> tuple[set[str], list[str]]:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    annotations = [
        ast.unparse(arg.annotation)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        if arg.annotation is not None
    ]
    return imported, annotations


@pytest.mark.parametrize("module", WORK_MODULES)
def test_work_modules_know_nothing_of_the_web_app(module: str) -> None:
    imported, annotations = _imports_and_annotations(ROOT / "app" / f"{module}.py")
    web = {name for name in imported if name.startswith("aiohttp")}
    assert web == set(), f"app/{module}.py imports {sorted(web)}"
    takes_app = [a for a in annotations if "Application" in a or "Request" in a]
    assert takes_app == [], f"a function of app/{module}.py takes {takes_app}"


def test_handlers_are_all_in_the_api_package_and_in_one_route_table() -> None:
    from app.api.routes import routes

    handlers = {route.handler.__module__ for route in routes}  # type: ignore[attr-defined]
    assert all(name.startswith("app.api.") for name in handlers), handlers
    for path in (ROOT / "app").glob("*.py"):
        source = path.read_text()
        assert "web.get(" not in source, path.name
        assert "web.post(" not in source, path.name


async def test_the_work_runs_without_a_web_app(settings: Settings) -> None:
    """As a worker process will: open the resources, sign up, upload, post, read the feed."""
    metrics = Metrics(None, "worker")
    cursors = Cursors(settings.jwt_secret or "")
    urls = ImageUrls.of(settings)
    async with (
        open_database(settings, metrics) as database,
        open_storage(settings, metrics) as storage,
        open_image_pool(settings, metrics) as images,
        open_passwords(settings) as passwords,
    ):
        ada = await users.create_user(database, passwords, "ada", "a good password", "Ada")
        bob = await users.create_user(database, passwords, "bob", "a good password", "Bob")
        await users.follow(database, bob["id"], ada["id"])

        budget = ByteBudget(settings.upload_memory_budget)
        upload = Upload(PHOTO, budget, len(PHOTO))
        work = media.MediaWork(database, storage, images, settings, urls)
        stored = await media.create(work, ada["id"], upload, None)
        assert (stored["width"], stored["height"]) == (290, 442)
        heic = (CORPUS / "Example1.heic").read_bytes()
        again = await media.create(work, ada["id"], Upload(heic, budget, len(heic)), "key-1")
        assert again["content_type"] == "image/heic"

        post = await posts.create_post(database, urls, ada["id"], stored["media_id"], "hi")
        liked = await posts.set_like(database, bob["id"], post["id"], liked=True)
        assert liked["like_count"] == 1

        page = await feed.feed_page(database, urls, cursors, metrics, bob["id"], 20, None)
        assert [item["id"] for item in page["items"]] == [post["id"]]
        assert page["items"][0]["like_count"] == 1
        original = await storage.client.get_object(
            Bucket=storage.bucket, Key=post["image_url"].split(f"/{storage.bucket}/", 1)[1]
        )
        assert (await original["Body"].read())[:2] == b"\xff\xd8"


def test_test_modules_share_helpers_only_through_helpers_and_conftest() -> None:
    for path in (ROOT / "tests").glob("test_*.py"):
        imported, _ = _imports_and_annotations(path)
        borrowed = {n for n in imported if n.startswith(("tests.test_", "tests.conftest"))}
        assert borrowed == set(), f"{path.name} imports {sorted(borrowed)}"
