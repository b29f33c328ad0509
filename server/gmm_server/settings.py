"""Where the course server keeps its state, and its ports: one place, from the environment.

=====================  ==========================  ==========================================
variable               default                     what
=====================  ==========================  ==========================================
GMM_SERVER_ROOT        /srv/gmm-course             state: hub/, exchange/, course/, config/
GMM_SERVER_IP          127.0.0.1                   where the hub's public proxy listens
GMM_SERVER_PORT        8000                        its port
GMM_HUB_API_PORT       8081                        the hub's internal API (loopback)
GMM_PROXY_API_PORT     8001                        configurable-http-proxy's API (loopback)
GMM_INSTRUCTORS_GROUP  gmm-instructors             unix group owning the course root
GMM_COURSE_ID          gmm-course                  nbgrader course id
=====================  ==========================  ==========================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER_DIR = REPO / "server"
VENV = REPO / ".venv"


@dataclass(frozen=True)
class Settings:
    root: Path
    ip: str
    port: int
    hub_api_port: int
    proxy_api_port: int
    group: str
    course_id: str

    # layout under root
    @property
    def hub_dir(self) -> Path:  # 0700 root: hub database, cookie secret, roster, logs
        return self.root / "hub"

    @property
    def roster(self) -> Path:
        return self.hub_dir / "roster.json"

    @property
    def exchange(self) -> Path:  # nbgrader exchange root (1777, sticky)
        return self.root / "exchange"

    @property
    def course(self) -> Path:  # nbgrader course root (root:group 2770)
        return self.root / "course"

    @property
    def config(self) -> Path:  # config/student, config/instructor (0755, no secrets)
        return self.root / "config"

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    @property
    def repo(self) -> Path:
        return REPO

    @property
    def solutions(self) -> Path:
        return REPO / "solutions"

    @property
    def exercises(self) -> Path:
        return REPO / "exercises"


def load(env: dict | None = None) -> Settings:
    e = os.environ if env is None else env
    return Settings(
        root=Path(e.get("GMM_SERVER_ROOT", "/srv/gmm-course")).resolve(),
        ip=e.get("GMM_SERVER_IP", "127.0.0.1"),
        port=int(e.get("GMM_SERVER_PORT", "8000")),
        hub_api_port=int(e.get("GMM_HUB_API_PORT", "8081")),
        proxy_api_port=int(e.get("GMM_PROXY_API_PORT", "8001")),
        group=e.get("GMM_INSTRUCTORS_GROUP", "gmm-instructors"),
        course_id=e.get("GMM_COURSE_ID", "gmm-course"),
    )
