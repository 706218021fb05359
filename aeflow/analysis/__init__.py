"""Tools that measure the runtime: whole-data-set evaluation, the HTML report, the benchmark.

They sit on top of ``aeflow.runtime`` and may load matplotlib or torch lazily; the runtime never
imports them.
"""
