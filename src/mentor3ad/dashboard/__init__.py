"""The operator dashboard: a read-only web page over an inspection record (:mod:`mentor3ad.records`),
served by ``mentor3ad dashboard --record PATH_OR_URL`` (Dash + Plotly, assets from the installed packages,
localhost by default, an access token for other addresses)."""
