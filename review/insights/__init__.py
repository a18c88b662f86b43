"""Dashboards: figures about runs, scenarios, models and the review team.

- `scope`: what a page asks about (a run, a scenario, everything; the team's period).
- `figures`: the `Figure` every selector returns, the rows a plot, a table and a CSV share.
- `quality`, `trends`, `team`: the selectors, each a few SQL aggregates.
- `plots`: server-side SVG geometry for each plot kind.
- `panels`: the boards (which panels a page shows) and how a board is computed once per request.
- `csv`: a panel's data as a CSV download.
"""
