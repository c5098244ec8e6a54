"""Big screens, the touch kiosk and the applicant's ticket page, pushed live over WebSockets.

The composition root calls `setup_display(app, hall, config)` on the daemon's aiohttp app;
see display/server.py for the routes, display/feed.py for the push path and
display/views.py for what each page may show.
"""

from .server import DisplayHandle, setup_display

__all__ = ["DisplayHandle", "setup_display"]
