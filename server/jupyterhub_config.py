"""JupyterHub configuration of the course server (started by ``make server`` /
``server/course start``; settings from the environment, see gmm_server/settings.py).

Hub as root on loopback, configurable-http-proxy from the project's node_modules/, the
roster authenticator (instructors are admins), each user's JupyterLab in a bubblewrap
sandbox as that user's unix account (gmm_server/spawner.py), nbgrader's Assignments tab
for students and Formgrader for instructors (config/<role>/ under the server root).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gmm_server import settings  # noqa: E402

c = get_config()  # noqa: F821
S = settings.load()

c.JupyterHub.ip = S.ip
c.JupyterHub.port = S.port
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = S.hub_api_port
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{S.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [str(settings.REPO / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(S.hub_dir / "jupyterhub-proxy.pid")

c.JupyterHub.db_url = "sqlite:///" + str(S.hub_dir / "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = str(S.hub_dir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(S.hub_dir / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every user's server
c.JupyterHub.cleanup_proxy = True

c.JupyterHub.authenticator_class = "gmm_server.auth.RosterAuthenticator"
c.RosterAuthenticator.roster_file = str(S.roster)

c.JupyterHub.spawner_class = "gmm_server.spawner.SandboxSpawner"
c.SandboxSpawner.roster_file = str(S.roster)
c.Spawner.ip = "127.0.0.1"
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120

# ---- switching to a real identity provider (docs/course-server.md), e.g. GitHub OAuth:
# c.JupyterHub.authenticator_class = "github"      # pip install oauthenticator
# c.GitHubOAuthenticator.oauth_callback_url = "https://course.example.org/hub/oauth_callback"
# c.GitHubOAuthenticator.client_id = ...; c.GitHubOAuthenticator.client_secret = ...
# c.GitHubOAuthenticator.allowed_users = {...}; c.GitHubOAuthenticator.admin_users = {...}
# Each user still needs a unix account and a roster role: server/course add-student NAME.
