"""The runtime: the parts that run the pipeline (probers -> engine -> actuators) in one process.

Between the face (cli, api, daemon.py's wiring) and the parts it drives
(engine/, probers/, actuators/, coordination/, replication/). Each module has
one job: `supervisor` runs named tasks.
"""
