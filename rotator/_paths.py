"""The one canonical form of a secret's name and backend path, checked by the manifest and by every provider.

Canonical: segments separated by single ``/``, none empty (no leading, trailing or doubled ``/``), none ``.``
or ``..``, and no control characters. Backends resolve ``..`` themselves (Vault's HTTP router, a filesystem)
or not at all (Secrets Manager), so a name like ``team/../victim`` could address another team's secret;
refusing every non-canonical spelling also means two spellings can never name one place.
"""

from __future__ import annotations

from rotator.errors import ManifestError

__all__ = ["Places", "canonical", "explain", "path_problem", "require_canonical"]


def path_problem(path: str) -> str | None:
    """Why ``path`` is not canonical, in a few words; None when it is."""
    if not path:
        return "it is empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "it contains a control character"
    if path.startswith("/"):
        return "it starts with '/'"
    if path.endswith("/"):
        return "it ends with '/'"
    segments = path.split("/")
    if "" in segments:
        return "it has an empty segment ('//')"
    if ".." in segments:
        return "it has a '..' segment"
    if "." in segments:
        return "it has a '.' segment"
    return None


def canonical(path: str) -> str | None:
    """The canonical spelling of ``path`` when one is obvious (dropping ``.`` and empty segments), else
    None (``..`` has no safe meaning)."""
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments or not segments:
        return None
    return "/".join(segments)


def explain(path: str) -> str | None:
    """A manifest message for a non-canonical ``path`` (with its canonical spelling, if any); None if fine."""
    why = path_problem(path)
    if why is None:
        return None
    better = canonical(path)
    return f"'{path}' is not a canonical secret path: {why}" + (f" (write '{better}')" if better else "")


def require_canonical(path: str, name: str, where: str) -> str:
    """``path`` (of secret ``name``) if canonical; else a ManifestError (exit 2) naming ``where``, the
    provider, mount or prefix the path could leave. Providers call it where they build a backend path."""
    why = path_problem(path)
    if why is not None:
        raise ManifestError(f"{name}: refusing path {path!r}: {why}, so it could leave {where}",
                            hint="write the path in canonical form: segments joined by single '/', "
                                 "no '.' or '..'")
    return path


class Places:
    """The manifest's check: every name and path canonical, and one secret per (provider, path)."""

    def __init__(self) -> None:
        self.taken: dict[tuple[str, str], str] = {}  # (provider, path) -> the secret stored there

    def claim(self, provider: str, name: str, path: str | None) -> tuple[str, str] | None:
        """Record secret ``name``; or (the offending key, why) if it cannot have that place."""
        for key, value in (("name", name), ("path", path)):
            if value is not None and (problem := explain(value)) is not None:
                return key, problem
        place = (provider, path or name)
        if place in self.taken:
            return ("path" if path else "name",
                    f"'{place[1]}' on provider '{provider}' is already where secret '{self.taken[place]}' is stored")
        self.taken[place] = name
        return None
