"""Tools that measure the runtime (evaluation, the HTML report, verify, the benchmark): on top of
``aeflow.runtime``, matplotlib and torch loaded lazily; the runtime never imports them."""

