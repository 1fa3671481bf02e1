"""The local demo deployment: simulated Quay sites on real S3 servers, BIND, HAProxy,
Prometheus and trafficd, all on loopback.

Outside the pipeline. `python -m trafficd.demo up|break|repair|watch|tour|down`
(__main__.py; `./demo.sh` installs what is missing first). peers.py starts the
real servers (BIND 9, HAProxy, Prometheus) for the demo, the benchmarks and the
tests; site.py is a simulated Quay site whose health follows its own bucket;
sitectl.py is what the command actuator runs to stop and start it. Needs the
`demo` extra (moto's server, boto3): `pip install '.[demo]'`.
"""
