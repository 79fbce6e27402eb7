"""Image references: which ones a stack should not run, and what to say about them (pure).

One rule, `judge(reference)`: an image known to be no longer published is an error (a fresh
machine cannot pull it, a running copy gets no fixes); one that says `:latest` or has no tag (so
docker reads `:latest`) is a warning (the next pull, on a new machine or after a prune, may bring
another version than the one tested). A digest (`@sha256:...`) pins, whatever the tag says.
`problems()` turns the verdicts on a stack's resolved images into Problems that name the service,
the variable (or compose file) that sets the image, and the fix; `pull_problem()` says what a
failed pull means. The docker calls that resolve images and pull them are kitty_ops.containers.compose's.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Mapping

from kitty_ops.problems import Problem, Severity
from kitty_ops.runbooks import Runbook

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
MINIO_LAST = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"

# (registry, repository) -> why it is gone and what to run instead.
UNPUBLISHED = {
    (DOCKER_HUB, "minio/minio"): (
        "MinIO stopped publishing images (source-only since late 2025) and the minio/minio "
        "repository was removed from Docker Hub: a machine without a copy cannot pull it, and a "
        "copy gets no fixes",
        f"set KITTY_OBJECT_STORE=rustfs, or MINIO_IMAGE={MINIO_LAST} (its last published image)"),
}


@dataclasses.dataclass(frozen=True)
class Reference:
    """A parsed image reference: [registry/]repository[:tag][@digest]."""

    registry: str  # docker.io for Docker Hub, whatever the spelling
    repository: str  # library/redis for the official `redis`
    tag: str  # "" when there is none
    digest: str  # "sha256:..." or ""

    @property
    def name(self) -> str:
        """The repository as one would type it (no docker.io/, no library/)."""
        if self.registry != DOCKER_HUB:
            return f"{self.registry}/{self.repository}"
        return self.repository.removeprefix("library/")


def parse(reference: str) -> Reference:
    """Docker's reference grammar: the first component is a registry only when it has a `.` or
    a `:` (a port) or is `localhost`, so `registry:5000/name` is a registry with a port and no
    tag, and `redis` is Docker Hub's library/redis."""
    name, _, digest = reference.strip().partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    repository, tag = (name[:colon], name[colon + 1:]) if colon > slash else (name, "")
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry = DOCKER_HUB if first.lower() in _HUB_ALIASES else first.lower()
        repository = rest
    else:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return Reference(registry, repository.lower(), tag, digest)


@dataclasses.dataclass(frozen=True)
class Verdict:
    severity: Severity
    message: str  # about the image, without the service: "says :latest, ..."
    fix: str  # generic; problems() adds where to change it


def judge(reference: str) -> Verdict | None:
    """The rule: None for an image that is fine to run (a version tag, or a digest)."""
    if not reference.strip():
        return None  # a service that builds its image has none to judge
    ref = parse(reference)
    gone = UNPUBLISHED.get((ref.registry, ref.repository))
    if gone is not None:
        why, fix = gone
        return Verdict(Severity.ERROR, f"is no longer published: {why}", fix)
    if ref.digest:
        return None
    moves = "which moves: another machine, or the next pull, may get another version than the one you tested"
    pin = f"pin a version tag or a digest ({ref.name}:<version> or {ref.name}@sha256:<digest>)"
    if not ref.tag:
        return Verdict(Severity.WARNING, f"has no tag, so docker uses :latest, {moves}", pin)
    if ref.tag == "latest":
        return Verdict(Severity.WARNING, f"says :latest, {moves}", pin)
    return None


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def variables(expression: str) -> tuple[str, ...]:
    """The variables an unresolved `image:` value reads, outermost first:
    `${BRAIN_IMAGE:-kitty/brain:${KITTY_APP_TAG:-latest}}` -> (BRAIN_IMAGE, KITTY_APP_TAG)."""
    return tuple(dict.fromkeys(_VARIABLE.findall(expression or "")))


def where(service: str, expression: str, files: Iterable[str]) -> str:
    """What sets a service's image: its variables, else the compose file's `image:` key."""
    found = variables(expression)
    if found:
        return " or ".join(found)
    return f"services.{service}.image in {', '.join(files) or 'the compose file'}"


def problems(images: Mapping[str, str], sources: Mapping[str, str], files: Iterable[str]) -> list[Problem]:
    """Verdicts on a stack's resolved images (service -> image) as Problems; `sources` holds
    each service's unresolved `image:` value, to name the variable that sets it. Errors first."""
    files = list(files)
    found: list[Problem] = []
    for service in sorted(images):
        image = images[service]
        verdict = judge(image)
        if verdict is None:
            continue
        subject = where(service, sources.get(service, ""), files)
        # An unpublished image's fix names its own variables; a pin goes where the image is set.
        fix = verdict.fix if verdict.severity is Severity.ERROR else f"{verdict.fix} in {subject}"
        found.append(Problem(verdict.severity, subject, f"service {service}: image {image} {verdict.message}",
                             fix, Runbook.CONTAINER_FAILED))
    return sorted(found, key=lambda p: not p.is_error)


def pull_problem(image: str, services: Iterable[str], registry_error: str, subject: str) -> Problem:
    """A failed pull: the services that need the image, the image, the registry's own words; the
    fix of a known-unpublished image when it is one."""
    names = ", ".join(services)
    verdict = judge(image)
    if verdict is not None and verdict.severity is Severity.ERROR:
        fix = verdict.fix
    else:
        fix = (f"check the image name and tag in {subject}; that this machine reaches its registry "
               f"(`docker pull {image}` shows the whole error; `docker login` for a private one); or "
               f"build or `docker load` the image here (a local image is never pulled)")
    return Problem(Severity.ERROR, subject, f"cannot pull {image} for service {names}: {registry_error}",
                   fix, Runbook.CONTAINER_FAILED)
