"""The docs work from a clone and say what the code does: every link in README.md and docs/
resolves inside the repository (to a file that exists and, for ``file.md#heading``, to a heading
it has); every setting is in docs/configuration.md, and no page names a setting that does not
exist; docs/api.md lists every route the app serves, and only those (but for its *Not served yet*);
docs/architecture.md names every module of the rooms, and every repository path the docs name exists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
CONFIGURATION = ROOT / "docs" / "configuration.md"


_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")
_SETTING = re.compile(r"HUBBUB_[A-Z][A-Z0-9_]*")


def prose(path: Path) -> str:
    """The markdown of ``path`` without code blocks and code spans, where a link is not a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))


def links(path: Path) -> Iterator[str]:
    text = prose(path)
    yield from _INLINE_LINK.findall(text)
    yield from _REFERENCE.findall(text)


def anchors(path: Path) -> set[str]:
    """The ids GitHub gives the headings of ``path``: the rendered text lower-cased, punctuation
    dropped, spaces made hyphens, and repeats numbered ``-1``, ``-2``..."""
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in found:
            n += 1
            unique = f"{slug}-{n}"
        found.add(unique)
    return found


def problems_of(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(path):
        if not target or _SCHEME.match(target):
            continue  # the web, mail: not this repository's business
        where, _, fragment = target.partition("#")
        if where.startswith("/"):
            problems.append(f"{target}: an absolute path; link relative to {path.name}")
            continue
        resolved = (path.parent / where).resolve() if where else path
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: outside the repository (a clone does not have it)")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: {resolved.relative_to(root)} has no heading #{fragment}")
    return problems


def test_the_docs_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "docs/architecture.md", "docs/api.md", "docs/configuration.md", "docs/benchmarks.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(path: Path) -> None:
    assert problems_of(path) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_nothing_points_at_files_outside_the_clone(path: Path) -> None:
    # Not even in code spans: the old README sent readers to ../shared/, which a clone lacks.
    assert "../shared" not in path.read_text(encoding="utf-8")


def test_the_link_check_catches_what_a_clone_would_miss(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    (clone / "docs").mkdir(parents=True)
    (clone / "docs" / "api.md").write_text("# API\n\n## WebSocket\n", encoding="utf-8")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "API.md").write_text("# outside\n", encoding="utf-8")  # exists, but not in the clone
    page = clone / "docs" / "page.md"
    page.write_text(
        "[a](../../shared/API.md) [b](missing.md) [c](api.md#no-such-heading) [d](/etc/passwd)\n"
        "`[e](ignored.md)`\n```\n[f](ignored-too.md)\n```\n[g]: nowhere.md\n"
        "[h](https://example.com/x.md) [i](api.md#websocket) [j](#k) [l](../docs/api.md)\n## K\n",
        encoding="utf-8",
    )
    found = problems_of(page, root=clone)
    assert [p.split(": ")[0] for p in found] == [
        "../../shared/API.md",
        "missing.md",
        "api.md#no-such-heading",
        "/etc/passwd",
        "nowhere.md",
    ]


def test_every_setting_is_documented() -> None:
    documented = set(_SETTING.findall(CONFIGURATION.read_text(encoding="utf-8")))
    missing = sorted(env_name(field) for field in Settings.__struct_fields__ if env_name(field) not in documented)
    assert missing == [], f"add them to {CONFIGURATION.relative_to(ROOT)}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_docs_name_only_settings_that_exist(path: Path) -> None:
    known = {env_name(field) for field in Settings.__struct_fields__}
    assert sorted(set(_SETTING.findall(path.read_text(encoding="utf-8"))) - known) == []


_ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`? ]*)`")
_UNSERVED = re.compile(r"^### Not served yet$.*?(?=^#)", re.MULTILINE | re.DOTALL)


def served_routes() -> set[tuple[str, str]]:
    from hubbub.app import API_PREFIX, create_app  # the app is built, not started: no I/O

    app = create_app(Settings(database_url="postgresql://h/db", nats_url="nats://h", redis_url="redis://h"))
    routes = {("GET", route.path) for route in app.routes if type(route).__name__ == "WebSocketRoute"}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            routes |= {(method, route.path) for method in getattr(handler, "http_methods", ())}
    return {
        (method, re.sub(r"\{[^}]+\}", "{}", path).removeprefix(API_PREFIX))
        for method, path in routes
        if method not in ("HEAD", "OPTIONS") and (not path.startswith("/schema") or path == "/schema/openapi.json")
    }


def test_api_md_lists_every_route_the_app_serves_and_no_other() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    unserved = "".join(_UNSERVED.findall(text))
    named = {
        (method, re.sub(r"\{[^}]+\}", "{}", path).removeprefix("/api/v1"))
        for method, path in _ROUTE.findall(text.replace(unserved, ""))
    }
    served = served_routes()
    assert sorted(served - named) == [], "add a line for each to docs/api.md"
    assert sorted(named - served) == [], "docs/api.md names routes the app does not serve"


ROOMS = ("domain", "commands", "projections", "readapi", "realtime", "infra", "hubbub")
_WHERE = re.compile(r"^## Where things live$(.*?)^## ", re.MULTILINE | re.DOTALL)
_ROOM_BULLET = re.compile(r"^- `(\w+)/`:(.*?)(?=^- |\Z)", re.MULTILINE | re.DOTALL)
_REPO_PATH = re.compile(
    r"(?<![\w/.])(?:domain|commands|projections|readapi|realtime|infra|hubbub|bench|tests|docs)"
    r"/[\w./-]*\.(?:py|sql|md|toml|gz|txt)\b"
)


def where_things_live() -> dict[str, set[str]]:
    """The module names docs/architecture.md's *Where things live* gives each room."""
    found = _WHERE.search((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    assert found is not None, "docs/architecture.md has no '## Where things live' section"
    return {room: set(re.findall(r"`([\w/]*\w\.py)`", text)) for room, text in _ROOM_BULLET.findall(found.group(1))}


def test_where_things_live_names_every_module_and_only_modules_that_exist() -> None:
    listed = where_things_live()
    modules = {room: {p.name for p in (ROOT / room).rglob("*.py") if p.name != "__init__.py"} for room in ROOMS}
    missing = sorted(f"{room}/**/{name}" for room in ROOMS for name in modules[room] - listed.get(room, set()))
    gone = sorted(f"{room}/**/{name}" for room in ROOMS for name in listed.get(room, set()) - modules[room])
    assert missing == [], "name them in docs/architecture.md, *Where things live*"
    assert gone == [], "docs/architecture.md, *Where things live*, names modules that do not exist"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_path_the_docs_name_exists(path: Path) -> None:
    # In code spans too: a moved module (hubbub/lane.py -> commands/lane.py) must not stay named.
    named = set(_REPO_PATH.findall(path.read_text(encoding="utf-8")))
    assert sorted(p for p in named if not (ROOT / p).exists()) == []
