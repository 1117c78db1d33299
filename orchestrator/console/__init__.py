"""The web console (DESIGN.md section 10): built assets in `static/` (from `web/`, `make console`)."""
