"""Prefect flows: the pipeline steps of :mod:`tasks` composed in order.

* :mod:`flows.data_pipeline`: scrape -> clean -> split
* :mod:`flows.training_pipeline`: train -> evaluate -> register
* :mod:`flows.pipeline`: both, plus the ``python -m flows.pipeline run|serve`` command line
* :mod:`flows.tuning`: scrape -> clean -> split -> tune, plus ``python -m flows.tuning run``
"""
