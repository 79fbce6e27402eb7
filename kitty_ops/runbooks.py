"""Names of the runbooks under ops/runbooks/. Every error kitty-ops prints points at one of these;
tests/unit/test_runbooks.py checks that each exists and that each file there is named here."""

from __future__ import annotations

import enum

RUNBOOK_DIR = "ops/runbooks"


class Runbook(str, enum.Enum):
    CONFIGURATION = "configuration"
    MODEL_FILES = "model-files"
    VISION_MMPROJ = "vision-mmproj"
    ENGINE_BINARY = "llama-server-binary"
    PORT_CONFLICT = "port-conflict"
    SERVER_CRASH = "llama-server-crash"
    SERVER_TIMEOUT = "llama-server-slow-load"
    OUT_OF_MEMORY = "out-of-memory"
    CPU_FALLBACK = "cpu-fallback"
    STOP_FAILED = "stop-failed"
    STALE_PID = "stale-pid-files"
    LOCK_HELD = "lock-held"
    DOCKER = "docker-engine"
    COMPOSE_FILE = "compose-file"
    CONTAINER_FAILED = "container-failed"
    NATIVE_SERVICE = "native-service-failed"
    E2E = "end-to-end-check"
    HEALTH_CHECK = "health-check"
    BACKUP = "backup-restore"
    EMERGENCY_STOP = "emergency-stop"
    DOCTOR = "doctor"
    HIGH_RESOURCE = "high-resource-usage"
    CRASH_LOOP = "crash-loop"
    SERVICE = "service"
    BENCH_REGRESSION = "bench-regression"

    @property
    def path(self) -> str:
        return f"{RUNBOOK_DIR}/{self.value}.md"
