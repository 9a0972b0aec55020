"""Voila configuration file of ``pqx dashboard`` (read by Voila from this folder, never imported).

``pqx dashboard`` starts Voila with ``--Voila.config_file_paths=<this folder>``; Voila executes this
file as a traitlets config (``get_config()`` is supplied by the loader). It caps the number of
kernels, the one resource every page load takes: each viewer gets a kernel that runs the tour,
and without a cap anyone who can reach the page can start kernels until the machine runs out of
memory. Beyond the cap a new page gets HTTP 503 with a one-line reason; kernels idle for
``PQX_DASHBOARD_CULL_S`` seconds (default 600) are shut down, which frees their slots.

Environment (set by ``pqx dashboard``): ``PQX_DASHBOARD_MAX_KERNELS`` (default 4).
"""
import os

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web

MAX_KERNELS = int(os.environ.get("PQX_DASHBOARD_MAX_KERNELS", "4"))
CULL_S = int(os.environ.get("PQX_DASHBOARD_CULL_S", "600"))


class CappedKernelManager(AsyncMappingKernelManager):
    """A kernel manager that refuses to start more than ``MAX_KERNELS`` kernels at once (HTTP 503)."""

    async def start_kernel(self, *args, **kwargs):
        if len(self.list_kernel_ids()) >= MAX_KERNELS:
            raise web.HTTPError(503, f"the dashboard already serves {MAX_KERNELS} viewers (its kernel cap); "
                                     "try again when one leaves")
        return await super().start_kernel(*args, **kwargs)


c = get_config()  # noqa: F821 - provided by traitlets when Voila loads this file
c.VoilaConfiguration.multi_kernel_manager_class = CappedKernelManager
c.MappingKernelManager.cull_idle_timeout = CULL_S
c.MappingKernelManager.cull_interval = max(10, min(60, CULL_S))
