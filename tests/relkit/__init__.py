"""Shared machinery of the reliability, fault, security and soak tests.

``report``: each test's result, with its numbers, into docs/reliability.md.
``serve``: a real ``crdguard serve`` process. ``net``: a TCP balancer and a
watch-aware proxy on 127.0.0.1. ``load``: bounded review load. ``reviews``:
the reviews and the states they are judged against.
"""
