"""``/docs``: Swagger UI 5 from the installed ``swagger-ui-bundle-v2`` package, never a CDN.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN (blank offline) with
an inline script. Here the page, its start-up script and the bundle's files
are all served by the admin listener, under a Content-Security-Policy that
allows only this origin's scripts and styles: nothing inline, nothing else.
Swagger UI is Apache-2.0 (the bundle package carries its licence).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
          "favicon-32x32.png": "image/png"}
POLICY = "; ".join(["default-src 'none'", "script-src 'self'", "style-src 'self'",
                    "img-src 'self' data:", "connect-src 'self'", "font-src 'self' data:",
                    "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"])
HEADERS = {"Content-Security-Policy": POLICY, "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API docs</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
"""

# relative URLs: the page works behind a reverse proxy that mounts the admin API under a prefix
START = """window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
});
"""


def mount_docs(app: FastAPI) -> None:
    """Add ``/docs`` (and its assets) to an app created with ``docs_url=None``."""
    root = Path(str(swagger_ui_path))
    page = PAGE.format(title=app.title)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=HEADERS)

    @app.get("/docs/start.js", include_in_schema=False)
    async def start() -> Response:
        return Response(START, media_type="text/javascript", headers=HEADERS)

    @app.get("/docs/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            return Response(status_code=404)
        return FileResponse(root / name, media_type=ASSETS[name],
                            headers={**HEADERS, "Cache-Control": "public, max-age=86400"})
