"""The pure core: data types and maths of a run. Imports no Locust, gevent, kubernetes,
jinja2 or plotly (stdlib, numpy and scipy only), so it loads fast and tests with plain data."""
