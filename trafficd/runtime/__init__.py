"""The runtime: the parts that run the pipeline (probers -> rounds -> actuators) in one process.

Below the faces (api.py serves its views and commands; daemon.py wires it to a
configuration file, listeners and signals) and above the parts it drives
(engine/, probers/, actuators/, coordination/, replication/). Each module has
one job and sees only those below it (docs/design.md, "Layers"): `wiring` builds
them; `views`, `commands`, `leader` (every round), `actuation`, `confirmation`,
`effects` (every outcome's audit, log, notify, export, save and wake), and the
state they share: `rounds`, `live`, `observations`.
"""
