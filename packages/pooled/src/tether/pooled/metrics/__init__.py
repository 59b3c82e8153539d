"""Exporters: a pool's ``stats()`` and event timings as Prometheus or OpenTelemetry metrics.

Two optional modules, each needing its own extra; importing this package
needs neither:

* :mod:`tether.pooled.metrics.prometheus` (``pip install "tether-pooled[prometheus]"``):
  a ``prometheus_client`` collector, ``tether_pool_*`` metrics labelled ``pool``;
* :mod:`tether.pooled.metrics.otel` (``pip install "tether-pooled[otel]"``):
  OpenTelemetry instruments through ``opentelemetry-api``, named as the
  semantic conventions for database client connection pools say
  (``db.client.connection.*``, attribute ``db.client.connection.pool.name``).

Both work the same way, in two halves:

* ``watch(pool)``: the gauges and counters are read from ``pool.stats()``
  when the metrics are collected (a scrape, an export), so they cost the
  pool nothing in between and can never disagree with ``stats()``;
* ``on_event``, passed as the pool's ``on_event=`` hook: the histograms
  (checkout wait, and for OpenTelemetry also connect and use times) are
  fed from the ``duration`` of each event (:mod:`tether.pooled.events`).
  Without it the histograms stay empty. An application with a hook of its
  own calls both from one function.

Pools are told apart by their ``name`` (give each its own ``name=``;
watching two live pools of the same name is a ``ValueError``) and held
weakly: a pool that is garbage-collected drops out of the metrics.
"""
